//! `filesystem.Filesystem`: stat, list, mkdir, move, remove, watches.
//!
//! Every call acts as the Basic-auth user (else the sandbox's default user):
//! relative paths resolve against that user's home and whatever is created
//! is owned by that user. The access token is checked by the server layer.

pub mod entry;
pub mod error;
pub mod metadata;
pub mod ops;
pub mod paths;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use connectrpc::{
    ConnectError, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};
use rand::distr::{Alphanumeric, SampleString};
use sandbar_proto::filesystem::{
    CreateWatcherRequest, CreateWatcherResponse, Filesystem, GetWatcherEventsRequest,
    GetWatcherEventsResponse, ListDirRequest, ListDirResponse, MakeDirRequest, MakeDirResponse,
    MoveRequest, MoveResponse, RemoveRequest, RemoveResponse, RemoveWatcherRequest,
    RemoveWatcherResponse, StatRequest, StatResponse, WatchDirRequest, WatchDirResponse,
};

use self::error::FsError;
use self::watch::{PollingWatcher, WatchSpec};
use crate::state::EnvdState;
use crate::users::UserInfo;

/// Implements the generated `Filesystem` service trait.
pub struct FilesystemService {
    state: Arc<EnvdState>,
    watchers: Mutex<HashMap<String, PollingWatcher>>,
}

impl FilesystemService {
    pub fn new(state: Arc<EnvdState>) -> Self {
        Self {
            state,
            watchers: Mutex::new(HashMap::new()),
        }
    }

    /// The acting user and `path` resolved for them.
    fn resolve(&self, ctx: &RequestContext, path: &str) -> Result<(UserInfo, PathBuf), FsError> {
        let user = paths::acting_user(&self.state, ctx.headers())?;
        let workdir = self.state.default_workdir();
        let resolved = paths::resolve(path, &user, workdir.as_deref())?;
        Ok((user, resolved))
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, HashMap<String, PollingWatcher>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FsError> + Send + 'static,
) -> Result<T, ConnectError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(ConnectError::from),
        Err(e) => Err(ConnectError::internal(format!(
            "filesystem task failed: {e}"
        ))),
    }
}

// Concrete return types are clearer than the trait's `impl Encodable`.
#[allow(refining_impl_trait)]
impl Filesystem for FilesystemService {
    async fn stat(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, StatRequest>,
    ) -> ServiceResult<StatResponse> {
        let (_, path) = self.resolve(&ctx, request.path)?;
        let entry = blocking(move || ops::stat(&path)).await?;
        Response::ok(StatResponse {
            entry: entry.into(),
            ..Default::default()
        })
    }

    async fn make_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MakeDirRequest>,
    ) -> ServiceResult<MakeDirResponse> {
        let (user, path) = self.resolve(&ctx, request.path)?;
        let entry = blocking(move || ops::make_dir(&path, &user)).await?;
        Response::ok(MakeDirResponse {
            entry: entry.into(),
            ..Default::default()
        })
    }

    async fn r#move(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MoveRequest>,
    ) -> ServiceResult<MoveResponse> {
        let (user, source) = self.resolve(&ctx, request.source)?;
        let (_, destination) = self.resolve(&ctx, request.destination)?;
        let entry = blocking(move || ops::rename(&source, &destination, &user)).await?;
        Response::ok(MoveResponse {
            entry: entry.into(),
            ..Default::default()
        })
    }

    async fn list_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, ListDirRequest>,
    ) -> ServiceResult<ListDirResponse> {
        let (_, path) = self.resolve(&ctx, request.path)?;
        let depth = request.depth;
        let entries = blocking(move || ops::list_dir(&path, depth)).await?;
        Response::ok(ListDirResponse {
            entries,
            ..Default::default()
        })
    }

    async fn remove(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, RemoveRequest>,
    ) -> ServiceResult<RemoveResponse> {
        let (_, path) = self.resolve(&ctx, request.path)?;
        blocking(move || ops::remove(&path)).await?;
        Response::ok(RemoveResponse::default())
    }

    async fn watch_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, WatchDirRequest>,
    ) -> ServiceResult<ServiceStream<WatchDirResponse>> {
        let (_, root) = self.resolve(&ctx, request.path)?;
        let spec = WatchSpec {
            root,
            recursive: request.recursive,
            include_entry: request.include_entry,
            allow_network_mounts: request.allow_network_mounts,
        };
        let keepalive = watch::keepalive_interval(ctx.headers());
        let root = spec.root.clone();
        let recursive = spec.recursive;
        // A recursive watch adds one inotify watch per directory, a walk that
        // can take a while on a large tree.
        let stream = blocking(move || watch::watch_stream(&spec, keepalive)).await?;
        tracing::debug!(path = %root.display(), recursive, "watch stream started");
        Ok(Response::stream(stream))
    }

    async fn create_watcher(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, CreateWatcherRequest>,
    ) -> ServiceResult<CreateWatcherResponse> {
        let (_, root) = self.resolve(&ctx, request.path)?;
        let spec = WatchSpec {
            root,
            recursive: request.recursive,
            include_entry: request.include_entry,
            allow_network_mounts: request.allow_network_mounts,
        };
        let root = spec.root.clone();
        let watcher = blocking(move || PollingWatcher::start(&spec)).await?;
        let watcher_id = format!(
            "w{}",
            Alphanumeric
                .sample_string(&mut rand::rng(), 20)
                .to_lowercase()
        );
        self.watchers().insert(watcher_id.clone(), watcher);
        tracing::debug!(%watcher_id, path = %root.display(), "polling watcher created");
        Response::ok(CreateWatcherResponse {
            watcher_id,
            ..Default::default()
        })
    }

    async fn get_watcher_events(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, GetWatcherEventsRequest>,
    ) -> ServiceResult<GetWatcherEventsResponse> {
        let events = {
            let watchers = self.watchers();
            let watcher = watchers.get(request.watcher_id).ok_or_else(|| {
                ConnectError::not_found(format!("watcher with id {} not found", request.watcher_id))
            })?;
            watcher.drain()?
        };
        Response::ok(GetWatcherEventsResponse {
            events,
            ..Default::default()
        })
    }

    async fn remove_watcher(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, RemoveWatcherRequest>,
    ) -> ServiceResult<RemoveWatcherResponse> {
        let removed = self.watchers().remove(request.watcher_id);
        match removed {
            // Dropping the watcher closes its inotify descriptor and thread.
            Some(watcher) => drop(watcher),
            None => {
                return Err(ConnectError::not_found(format!(
                    "watcher with id {} not found",
                    request.watcher_id
                )))
            }
        }
        Response::ok(RemoveWatcherResponse::default())
    }
}
