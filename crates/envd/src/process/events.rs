//! What a process emits, and how that reads on the wire.

use bytes::Bytes;
use sandbar_proto::process::{process_event, ProcessEvent};

use crate::reaper::ExitStatus;

/// One chunk of output.
#[derive(Debug, Clone)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    Pty(Bytes),
}

/// How a process ended, in the words of the end event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndInfo {
    pub exit_code: i32,
    pub exited: bool,
    pub status: String,
    pub error: Option<String>,
}

impl EndInfo {
    /// Mirrors Go's `os.ProcessState` wording, which the SDKs show to users:
    /// "exit status N", "signal: killed"; a killed process has exit code -1.
    pub fn from_status(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Exited(code) => {
                let status = format!("exit status {code}");
                Self {
                    exit_code: code,
                    exited: true,
                    error: (code != 0).then(|| status.clone()),
                    status,
                }
            }
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => {
                let mut status = format!("signal: {}", signal_name(signal));
                if core_dumped {
                    status.push_str(" (core dumped)");
                }
                Self {
                    exit_code: -1,
                    exited: false,
                    error: Some(status.clone()),
                    status,
                }
            }
        }
    }

    /// An end for a process whose status could not be collected.
    pub fn lost(reason: &str) -> Self {
        Self {
            exit_code: -1,
            exited: false,
            status: "unknown".to_string(),
            error: Some(reason.to_string()),
        }
    }
}

/// What subscribers of a process receive.
#[derive(Debug, Clone)]
pub enum Event {
    Data(Output),
    End(EndInfo),
}

/// The lower-case signal descriptions Go prints (strsignal wording).
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGILL => "illegal instruction",
        libc::SIGTRAP => "trace/breakpoint trap",
        libc::SIGABRT => "aborted",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating point exception",
        libc::SIGKILL => "killed",
        libc::SIGUSR1 => "user defined signal 1",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGUSR2 => "user defined signal 2",
        libc::SIGPIPE => "broken pipe",
        libc::SIGALRM => "alarm clock",
        libc::SIGTERM => "terminated",
        libc::SIGXCPU => "CPU time limit exceeded",
        libc::SIGXFSZ => "file size limit exceeded",
        libc::SIGSYS => "bad system call",
        other => return format!("signal {other}"),
    };
    name.to_string()
}

pub fn start_event(pid: u32) -> ProcessEvent {
    ProcessEvent {
        event: Some(
            process_event::StartEvent {
                pid,
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    }
}

pub fn keepalive_event() -> ProcessEvent {
    ProcessEvent {
        event: Some(process_event::KeepAlive::default().into()),
        ..Default::default()
    }
}

pub fn to_proto(event: &Event) -> ProcessEvent {
    use process_event::data_event::Output as Wire;
    let inner: process_event::Event = match event {
        Event::Data(output) => {
            let output = match output {
                Output::Stdout(b) => Wire::Stdout(b.to_vec()),
                Output::Stderr(b) => Wire::Stderr(b.to_vec()),
                Output::Pty(b) => Wire::Pty(b.to_vec()),
            };
            process_event::DataEvent {
                output: Some(output),
                ..Default::default()
            }
            .into()
        }
        Event::End(end) => process_event::EndEvent {
            exit_code: end.exit_code,
            exited: end.exited,
            status: end.status.clone(),
            error: end.error.clone(),
            ..Default::default()
        }
        .into(),
    };
    ProcessEvent {
        event: Some(inner),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_like_go() {
        let ok = EndInfo::from_status(ExitStatus::Exited(0));
        assert_eq!(ok.status, "exit status 0");
        assert!(ok.exited);
        assert_eq!(ok.error, None);

        let failed = EndInfo::from_status(ExitStatus::Exited(3));
        assert_eq!(failed.exit_code, 3);
        assert_eq!(failed.error.as_deref(), Some("exit status 3"));

        let killed = EndInfo::from_status(ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core_dumped: false,
        });
        assert_eq!(killed.status, "signal: killed");
        assert_eq!(killed.exit_code, -1);
        assert!(!killed.exited);

        let term = EndInfo::from_status(ExitStatus::Signaled {
            signal: libc::SIGTERM,
            core_dumped: false,
        });
        assert_eq!(term.status, "signal: terminated");

        let segv = EndInfo::from_status(ExitStatus::Signaled {
            signal: libc::SIGSEGV,
            core_dumped: true,
        });
        assert_eq!(segv.status, "signal: segmentation fault (core dumped)");
    }

    #[test]
    fn data_events_keep_their_stream() {
        let ev = to_proto(&Event::Data(Output::Stderr(Bytes::from_static(b"x"))));
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json, serde_json::json!({"data": {"stderr": "eA=="}}));
        let end = to_proto(&Event::End(EndInfo::from_status(ExitStatus::Exited(0))));
        let json = serde_json::to_value(&end).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"end": {"exited": true, "status": "exit status 0"}})
        );
    }
}
