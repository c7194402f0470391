//! Directory watches over inotify (through `notify`): the streaming
//! `WatchDir` and the polling watchers of `CreateWatcher`/`GetWatcherEvents`.
//!
//! Events are translated on notify's own thread, so the `include_entry`
//! `lstat` never blocks the async runtime.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connectrpc::ConnectError;
use futures::Stream;
use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sandbar_proto::filesystem::{watch_dir_response, EventType, FilesystemEvent, WatchDirResponse};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::entry::{entry_info, OwnerNames};
use super::error::FsError;

/// E2B's default when the client sends no `Keepalive-Ping-Interval`.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);

/// A polling watcher nobody drains must not grow without bound.
const MAX_BUFFERED_EVENTS: usize = 100_000;

/// What to watch, already resolved to an absolute path.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub root: PathBuf,
    pub recursive: bool,
    pub include_entry: bool,
    pub allow_network_mounts: bool,
}

/// Checks the root is an existing local directory (network filesystems do
/// not deliver inotify events for remote changes, so E2B refuses them unless
/// the client opts in).
fn check_watchable(spec: &WatchSpec) -> Result<(), FsError> {
    let meta = std::fs::metadata(&spec.root)
        .map_err(|e| FsError::io(format!("path '{}' not found", spec.root.display()), e))?;
    if !meta.is_dir() {
        return Err(FsError::InvalidArgument(format!(
            "path '{}' is not a directory",
            spec.root.display()
        )));
    }
    if !spec.allow_network_mounts && is_network_mount(&spec.root)? {
        return Err(FsError::InvalidArgument(format!(
            "cannot watch path on network filesystem: {}",
            spec.root.display()
        )));
    }
    Ok(())
}

fn is_network_mount(path: &Path) -> Result<bool, FsError> {
    use nix::sys::statfs::{statfs, FUSE_SUPER_MAGIC, NFS_SUPER_MAGIC, SMB_SUPER_MAGIC};
    // CIFS and SMB2 have no named constant in nix.
    const CIFS_MAGIC: i64 = 0xFF53_4D42;
    const SMB2_MAGIC: i64 = 0xFE53_4D42;
    let fs =
        statfs(path).map_err(|e| FsError::io(format!("statfs '{}'", path.display()), e.into()))?;
    let kind = fs.filesystem_type();
    Ok(kind == NFS_SUPER_MAGIC
        || kind == SMB_SUPER_MAGIC
        || kind == FUSE_SUPER_MAGIC
        || matches!(kind.0 as i64, CIFS_MAGIC | SMB2_MAGIC))
}

/// Starts watching; every translated event (or the watch's failure) is
/// handed to `sink` on notify's thread. Dropping the returned watcher stops
/// the watch and closes its inotify descriptor.
fn start<F>(spec: &WatchSpec, mut sink: F) -> Result<RecommendedWatcher, FsError>
where
    F: FnMut(Result<FilesystemEvent, FsError>) + Send + 'static,
{
    check_watchable(spec)?;
    let root = spec.root.clone();
    let include_entry = spec.include_entry;
    let mut names = OwnerNames::default();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) => {
                for translated in translate(&event, &root, include_entry, &mut names) {
                    sink(Ok(translated));
                }
            }
            Err(e) => sink(Err(FsError::Internal(format!("watcher error: {e}")))),
        })
        .map_err(|e| FsError::Internal(format!("creating watcher: {e}")))?;
    let mode = if spec.recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher.watch(&spec.root, mode).map_err(|e| match e.kind {
        notify::ErrorKind::MaxFilesWatch => FsError::NoSpace {
            context: format!("watching '{}'", spec.root.display()),
            source: std::io::Error::other("inotify watch limit reached"),
        },
        _ => FsError::Internal(format!("watching '{}': {e}", spec.root.display())),
    })?;
    Ok(watcher)
}

/// Maps one notify event onto E2B's event types, following fsnotify (which
/// E2B uses): a rename yields RENAME for the old name and CREATE for the new.
fn event_type(kind: &EventKind) -> Option<EventType> {
    match kind {
        EventKind::Create(_) => Some(EventType::EVENT_TYPE_CREATE),
        EventKind::Remove(_) => Some(EventType::EVENT_TYPE_REMOVE),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Some(EventType::EVENT_TYPE_CREATE),
        // The paired event repeats what From and To already reported.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => None,
        EventKind::Modify(ModifyKind::Name(_)) => Some(EventType::EVENT_TYPE_RENAME),
        EventKind::Modify(ModifyKind::Metadata(_)) => Some(EventType::EVENT_TYPE_CHMOD),
        EventKind::Modify(_) => Some(EventType::EVENT_TYPE_WRITE),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => None,
    }
}

fn translate(
    event: &notify::Event,
    root: &Path,
    include_entry: bool,
    names: &mut OwnerNames,
) -> Vec<FilesystemEvent> {
    let Some(kind) = event_type(&event.kind) else {
        return Vec::new();
    };
    event
        .paths
        .iter()
        .map(|path| {
            let name = match path.strip_prefix(root) {
                Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
                Ok(rel) => rel.to_string_lossy().into_owned(),
                Err(_) => path.to_string_lossy().into_owned(),
            };
            // Removed and renamed-away paths are gone; a stat could only find
            // a newer file that took the name.
            let carries_entry = matches!(
                kind,
                EventType::EVENT_TYPE_CREATE
                    | EventType::EVENT_TYPE_WRITE
                    | EventType::EVENT_TYPE_CHMOD
            );
            let entry = if include_entry && carries_entry {
                entry_info(path, names).ok()
            } else {
                None
            };
            FilesystemEvent {
                name,
                r#type: kind.into(),
                entry: entry.into(),
                ..Default::default()
            }
        })
        .collect()
}

/// The `Keepalive-Ping-Interval` header (seconds), else E2B's default.
pub fn keepalive_interval(headers: &http::HeaderMap) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|secs| *secs > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_KEEPALIVE)
}

/// The `WatchDir` response stream: `start`, then events as they happen and
/// a keepalive whenever `keepalive` passes without one. The watch lives as
/// long as the stream, so a client hanging up stops it.
pub fn watch_stream(
    spec: &WatchSpec,
    keepalive: Duration,
) -> Result<impl Stream<Item = Result<WatchDirResponse, ConnectError>> + Send + 'static, FsError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = start(spec, move |event| {
        // The receiver only goes away with the stream, and then nobody cares.
        let _ = tx.send(event);
    })?;
    let mut ticker = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = StreamState {
        _watcher: watcher,
        rx,
        ticker,
        started: false,
        finished: false,
    };
    Ok(futures::stream::unfold(state, next_message))
}

struct StreamState {
    _watcher: RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<Result<FilesystemEvent, FsError>>,
    ticker: tokio::time::Interval,
    started: bool,
    finished: bool,
}

async fn next_message(
    mut st: StreamState,
) -> Option<(Result<WatchDirResponse, ConnectError>, StreamState)> {
    if st.finished {
        return None;
    }
    if !st.started {
        st.started = true;
        let start = WatchDirResponse {
            event: Some(watch_dir_response::StartEvent::default().into()),
            ..Default::default()
        };
        return Some((Ok(start), st));
    }
    let message = tokio::select! {
        event = st.rx.recv() => match event {
            Some(Ok(event)) => {
                st.ticker.reset();
                Ok(WatchDirResponse { event: Some(event.into()), ..Default::default() })
            }
            Some(Err(e)) => {
                st.finished = true;
                Err(e.into())
            }
            None => {
                st.finished = true;
                Err(ConnectError::internal("the directory watch stopped"))
            }
        },
        _ = st.ticker.tick() => Ok(WatchDirResponse {
            event: Some(watch_dir_response::KeepAlive::default().into()),
            ..Default::default()
        }),
    };
    Some((message, st))
}

/// A watch whose events wait in a buffer until `GetWatcherEvents` takes them.
pub struct PollingWatcher {
    _watcher: RecommendedWatcher,
    buffer: Arc<Mutex<Buffer>>,
}

#[derive(Default)]
struct Buffer {
    events: Vec<FilesystemEvent>,
    /// Once set, the watcher is broken and every poll reports this.
    error: Option<FsError>,
}

impl PollingWatcher {
    pub fn start(spec: &WatchSpec) -> Result<Self, FsError> {
        let buffer = Arc::new(Mutex::new(Buffer::default()));
        let sink_buffer = Arc::clone(&buffer);
        let watcher = start(spec, move |event| {
            let mut buf = sink_buffer.lock().unwrap_or_else(|p| p.into_inner());
            if buf.error.is_some() {
                return;
            }
            match event {
                Ok(_) if buf.events.len() >= MAX_BUFFERED_EVENTS => {
                    buf.error = Some(FsError::Internal(format!(
                        "more than {MAX_BUFFERED_EVENTS} events were not collected; the watcher stopped"
                    )));
                }
                Ok(event) => buf.events.push(event),
                Err(e) => buf.error = Some(e),
            }
        })?;
        Ok(Self {
            _watcher: watcher,
            buffer,
        })
    }

    /// Takes the buffered events, or reports why the watcher broke.
    pub fn drain(&self) -> Result<Vec<FilesystemEvent>, FsError> {
        let mut buf = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(err) = &buf.error {
            return Err(match err {
                FsError::NoSpace { context, source } => FsError::NoSpace {
                    context: context.clone(),
                    source: std::io::Error::new(source.kind(), source.to_string()),
                },
                other => FsError::Internal(other.to_string()),
            });
        }
        Ok(std::mem::take(&mut buf.events))
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind};
    use sandbar_proto::filesystem::__buffa::oneof::watch_dir_response::Event as WatchEvent;

    use super::*;

    #[test]
    fn event_kinds_map_like_fsnotify() {
        let t = |k: EventKind| event_type(&k);
        assert_eq!(
            t(EventKind::Create(CreateKind::File)),
            Some(EventType::EVENT_TYPE_CREATE)
        );
        assert_eq!(
            t(EventKind::Remove(RemoveKind::Folder)),
            Some(EventType::EVENT_TYPE_REMOVE)
        );
        assert_eq!(
            t(EventKind::Modify(ModifyKind::Data(DataChange::Any))),
            Some(EventType::EVENT_TYPE_WRITE)
        );
        assert_eq!(
            t(EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any))),
            Some(EventType::EVENT_TYPE_CHMOD)
        );
        assert_eq!(
            t(EventKind::Modify(ModifyKind::Name(RenameMode::From))),
            Some(EventType::EVENT_TYPE_RENAME)
        );
        assert_eq!(
            t(EventKind::Modify(ModifyKind::Name(RenameMode::To))),
            Some(EventType::EVENT_TYPE_CREATE)
        );
        assert_eq!(
            t(EventKind::Modify(ModifyKind::Name(RenameMode::Both))),
            None
        );
        assert_eq!(t(EventKind::Access(notify::event::AccessKind::Any)), None);
    }

    #[test]
    fn keepalive_header_parsing() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(keepalive_interval(&headers), DEFAULT_KEEPALIVE);
        headers.insert("Keepalive-Ping-Interval", "5".parse().unwrap());
        assert_eq!(keepalive_interval(&headers), Duration::from_secs(5));
        headers.insert("Keepalive-Ping-Interval", "0".parse().unwrap());
        assert_eq!(keepalive_interval(&headers), DEFAULT_KEEPALIVE);
        headers.insert("Keepalive-Ping-Interval", "soon".parse().unwrap());
        assert_eq!(keepalive_interval(&headers), DEFAULT_KEEPALIVE);
    }

    fn spec(root: &Path, recursive: bool) -> WatchSpec {
        WatchSpec {
            root: root.to_path_buf(),
            recursive,
            include_entry: true,
            allow_network_mounts: false,
        }
    }

    /// Polls until `pred` holds for the collected events or 5 s pass.
    fn collect_until(
        w: &PollingWatcher,
        pred: impl Fn(&[FilesystemEvent]) -> bool,
    ) -> Vec<FilesystemEvent> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut all = Vec::new();
        loop {
            all.extend(w.drain().unwrap());
            if pred(&all) || std::time::Instant::now() > deadline {
                return all;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn has(events: &[FilesystemEvent], name: &str, kind: EventType) -> bool {
        events
            .iter()
            .any(|e| e.name == name && e.r#type.as_known() == Some(kind))
    }

    #[test]
    fn polling_watcher_sees_create_write_rename_chmod_remove() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let w = PollingWatcher::start(&spec(&root, false)).unwrap();

        std::fs::write(root.join("a.txt"), b"hello").unwrap();
        // Wait before renaming, so the entry can still be looked up.
        let mut events = collect_until(&w, |ev| has(ev, "a.txt", EventType::EVENT_TYPE_WRITE));
        let created = events
            .iter()
            .find(|e| {
                e.name == "a.txt" && e.r#type.as_known() == Some(EventType::EVENT_TYPE_CREATE)
            })
            .expect("a create event");
        assert_eq!(
            created.entry.name, "a.txt",
            "include_entry attaches the entry"
        );

        std::fs::rename(root.join("a.txt"), root.join("b.txt")).unwrap();
        std::fs::set_permissions(root.join("b.txt"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::remove_file(root.join("b.txt")).unwrap();

        events.extend(collect_until(&w, |ev| {
            has(ev, "b.txt", EventType::EVENT_TYPE_REMOVE)
        }));
        assert!(
            has(&events, "a.txt", EventType::EVENT_TYPE_RENAME),
            "{events:?}"
        );
        assert!(
            has(&events, "b.txt", EventType::EVENT_TYPE_CREATE),
            "{events:?}"
        );
        assert!(
            has(&events, "b.txt", EventType::EVENT_TYPE_CHMOD),
            "{events:?}"
        );
        assert!(
            has(&events, "b.txt", EventType::EVENT_TYPE_REMOVE),
            "{events:?}"
        );
        let removed = events
            .iter()
            .find(|e| e.r#type.as_known() == Some(EventType::EVENT_TYPE_REMOVE))
            .unwrap();
        assert!(!removed.entry.is_set(), "a removed path carries no entry");
    }

    #[test]
    fn recursive_watch_reports_nested_names_and_plain_watch_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        let recursive = PollingWatcher::start(&spec(&root, true)).unwrap();
        let flat = PollingWatcher::start(&spec(&root, false)).unwrap();

        std::fs::write(root.join("sub/inner.txt"), b"x").unwrap();
        std::fs::write(root.join("top.txt"), b"x").unwrap();

        let events = collect_until(&recursive, |ev| {
            has(ev, "sub/inner.txt", EventType::EVENT_TYPE_CREATE)
                && has(ev, "top.txt", EventType::EVENT_TYPE_CREATE)
        });
        assert!(
            has(&events, "sub/inner.txt", EventType::EVENT_TYPE_CREATE),
            "{events:?}"
        );
        let flat_events =
            collect_until(&flat, |ev| has(ev, "top.txt", EventType::EVENT_TYPE_CREATE));
        assert!(has(&flat_events, "top.txt", EventType::EVENT_TYPE_CREATE));
        assert!(
            !flat_events.iter().any(|e| e.name.starts_with("sub/")),
            "{flat_events:?}"
        );
    }

    #[test]
    fn watching_a_missing_path_or_a_file_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        assert!(matches!(
            PollingWatcher::start(&spec(&missing, false)),
            Err(FsError::NotFound(_))
        ));
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            PollingWatcher::start(&spec(&file, false)),
            Err(FsError::InvalidArgument(_))
        ));
    }

    #[tokio::test]
    async fn stream_starts_then_sends_events_and_keepalives() {
        use futures::StreamExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let stream = watch_stream(&spec(&root, false), Duration::from_secs(1)).unwrap();
        let mut stream = Box::pin(stream);

        let first = stream.next().await.unwrap().unwrap();
        assert!(matches!(first.event, Some(WatchEvent::Start(_))));

        std::fs::write(root.join("new.txt"), b"x").unwrap();
        let second = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match second.event {
            Some(WatchEvent::Filesystem(ev)) => {
                assert_eq!(ev.name, "new.txt");
                assert_eq!(ev.r#type.as_known(), Some(EventType::EVENT_TYPE_CREATE));
            }
            other => panic!("expected a filesystem event, got {other:?}"),
        }

        // Drain the write/close events, then wait for a keepalive.
        let started = std::time::Instant::now();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if matches!(msg.event, Some(WatchEvent::Keepalive(_))) {
                break;
            }
        }
        assert!(started.elapsed() >= Duration::from_millis(900));
    }
}
