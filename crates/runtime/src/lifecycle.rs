//! The lifecycle of a sandbox, as one state machine: what can happen to a
//! sandbox now, and who may make it happen. Every operation of the runtime
//! asks [`State::begin`] for its transition first, and a refused one is a
//! typed [`LifecycleError`] the API turns into 409 or 404.
//!
//! ```text
//!   warm ──hand-over──┐
//!                     v
//!   starting ──> running ──pause──> pausing ──> paused ──resume──> resuming ──> running
//!                  │  ^                │                                          │
//!                  │  └─ snapshot (running, briefly frozen) ─┘                   │
//!                  └──────────────── kill (from any state) ──> killed <──────────┘
//! ```
//!
//! `paused` comes in two modes, as E2B defines them: `full` keeps the
//! processes and their memory (frozen in place, or checkpointed to disk when
//! they must outlive the server), `filesystem` keeps only the files (resume
//! boots the sandbox afresh on them).

use serde::{Deserialize, Serialize};

/// How a paused sandbox was paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseMode {
    /// Processes and memory kept: resume continues them (same boot).
    Full,
    /// Files kept: resume boots afresh (a new boot id, the start command
    /// runs again).
    Filesystem,
}

impl PauseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseMode::Full => "full",
            PauseMode::Filesystem => "filesystem",
        }
    }
}

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Made ahead of demand, not yet anyone's.
    Warm,
    Starting,
    Running,
    Pausing,
    Paused(PauseMode),
    Resuming,
    /// Being snapshotted (briefly frozen; running again afterwards).
    Snapshotting,
    Killed,
}

/// What is asked of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    HandOver,
    Started,
    Pause(PauseMode),
    Paused(PauseMode),
    Resume,
    Resumed,
    Snapshot,
    Snapshotted,
    /// An operation in progress failed: back to where it began.
    Failed,
    Kill,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LifecycleError {
    #[error("sandbox '{0}' is already paused")]
    AlreadyPaused(String),
    #[error("sandbox '{0}' is already running")]
    AlreadyRunning(String),
    #[error("sandbox '{id}' is {state} and cannot {op} now")]
    Busy {
        id: String,
        state: &'static str,
        op: &'static str,
    },
    #[error("sandbox '{0}' is not running")]
    NotRunning(String),
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Warm => "warm",
            State::Starting => "starting",
            State::Running => "running",
            State::Pausing => "pausing",
            State::Paused(_) => "paused",
            State::Resuming => "resuming",
            State::Snapshotting => "snapshotting",
            State::Killed => "killed",
        }
    }

    /// What the API shows: E2B knows only running and paused (a pause in
    /// progress shows as paused, a resume or snapshot as running).
    pub fn shown(self) -> &'static str {
        match self {
            State::Pausing | State::Paused(_) => "paused",
            _ => "running",
        }
    }

    /// The state `op` leads to from here, or why it may not happen.
    /// `before` is where a failed operation returns to.
    pub fn next(self, id: &str, op: Op, before: State) -> Result<State, LifecycleError> {
        use State::*;
        let busy = |op: &'static str| LifecycleError::Busy {
            id: id.to_string(),
            state: self.name(),
            op,
        };
        match (self, op) {
            (_, Op::Kill) => Ok(Killed),
            (Warm, Op::HandOver) | (Starting, Op::Started) => Ok(Running),
            (Running, Op::Pause(_)) => Ok(Pausing),
            (Paused(_), Op::Pause(_)) => Err(LifecycleError::AlreadyPaused(id.to_string())),
            (Pausing, Op::Paused(mode)) => Ok(Paused(mode)),
            (Paused(_), Op::Resume) => Ok(Resuming),
            (Running, Op::Resume) => Err(LifecycleError::AlreadyRunning(id.to_string())),
            (Resuming, Op::Resumed) => Ok(Running),
            (Running | Paused(_), Op::Snapshot) => Ok(Snapshotting),
            (Snapshotting, Op::Snapshotted) => Ok(before),
            (Pausing | Resuming | Snapshotting | Starting, Op::Failed) => Ok(before),
            (_, Op::Pause(_)) => Err(busy("pause")),
            (_, Op::Resume) => Err(busy("resume")),
            (_, Op::Snapshot) => Err(busy("be snapshotted")),
            (_, op) => Err(busy(match op {
                Op::HandOver => "be handed over",
                Op::Started => "start",
                Op::Paused(_) => "finish a pause",
                Op::Resumed => "finish a resume",
                Op::Snapshotted => "finish a snapshot",
                _ => "do that",
            })),
        }
    }

    pub fn is_paused(self) -> bool {
        matches!(self, State::Paused(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    fn go(s: State, op: Op) -> Result<State, LifecycleError> {
        s.next("sb", op, Running)
    }

    #[test]
    fn a_sandbox_runs_pauses_and_resumes() {
        assert_eq!(go(Starting, Op::Started), Ok(Running));
        assert_eq!(go(Warm, Op::HandOver), Ok(Running));
        assert_eq!(go(Running, Op::Pause(PauseMode::Full)), Ok(Pausing));
        assert_eq!(
            go(Pausing, Op::Paused(PauseMode::Full)),
            Ok(Paused(PauseMode::Full))
        );
        assert_eq!(go(Paused(PauseMode::Filesystem), Op::Resume), Ok(Resuming));
        assert_eq!(go(Resuming, Op::Resumed), Ok(Running));
    }

    #[test]
    fn what_may_not_happen_says_why() {
        assert_eq!(
            go(Paused(PauseMode::Full), Op::Pause(PauseMode::Full)),
            Err(LifecycleError::AlreadyPaused("sb".into()))
        );
        assert_eq!(
            go(Running, Op::Resume),
            Err(LifecycleError::AlreadyRunning("sb".into()))
        );
        assert!(matches!(
            go(Pausing, Op::Resume),
            Err(LifecycleError::Busy { op: "resume", .. })
        ));
        assert!(matches!(
            go(Snapshotting, Op::Pause(PauseMode::Full)),
            Err(LifecycleError::Busy { .. })
        ));
        assert!(matches!(
            go(Starting, Op::Snapshot),
            Err(LifecycleError::Busy { .. })
        ));
    }

    #[test]
    fn kill_wins_and_failures_go_back() {
        for s in [
            Warm,
            Starting,
            Running,
            Pausing,
            Paused(PauseMode::Full),
            Resuming,
            Snapshotting,
        ] {
            assert_eq!(go(s, Op::Kill), Ok(Killed));
        }
        assert_eq!(Pausing.next("sb", Op::Failed, Running), Ok(Running));
        assert_eq!(
            Resuming.next("sb", Op::Failed, Paused(PauseMode::Filesystem)),
            Ok(Paused(PauseMode::Filesystem))
        );
        assert_eq!(
            Snapshotting.next("sb", Op::Snapshotted, Paused(PauseMode::Full)),
            Ok(Paused(PauseMode::Full))
        );
        assert_eq!(Running.shown(), "running");
        assert_eq!(Pausing.shown(), "paused");
    }
}
