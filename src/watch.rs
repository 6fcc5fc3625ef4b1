//! Reloading on file changes ([`Mesh::watch`](crate::Mesh::watch), feature `watch`).
//!
//! A `notify` watcher reports changes under the config paths on its own thread; they go
//! through a channel to a tokio task that waits until the changes stop for the debounce
//! interval (editors write a file in several steps, `kubectl`-style tools swap directories),
//! then reloads once. The task ends when the [`WatchGuard`] is dropped, or when the mesh is.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::mesh::{Mesh, MeshEvent, MeshInner};

/// Keeps a config watch alive; drop it to stop watching.
#[must_use = "the watch stops when the guard is dropped"]
pub struct WatchGuard {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchGuard").finish_non_exhaustive()
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a changed path is a file that cannot be config: it has an extension, and not one
/// the loader reads (`.yaml`, `.yml`, `.json`). Paths without one (directories, Kubernetes'
/// `..data` / `..data_tmp` symlink swap) count as config changes.
fn not_config(path: &std::path::Path) -> bool {
    let swap = path
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b".."));
    !swap
        && path.extension().is_some_and(|ext| {
            !["yaml", "yml", "json"]
                .iter()
                .any(|c| ext.eq_ignore_ascii_case(c))
        })
}

pub(crate) fn watch(
    mesh: Mesh,
    paths: Vec<PathBuf>,
    debounce: Duration,
) -> Result<WatchGuard, Error> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::Io(std::io::Error::other(
            "Mesh::watch must be called within a tokio runtime",
        ))
    })?;
    if paths.is_empty() {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "Mesh::watch: the mesh has no config paths to watch (only YAML strings)",
        )));
    }
    let (tx, rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let msg = match event {
            Ok(e) if e.kind.is_access() => return,
            // A log or an editor's swap file next to the config is not a config change.
            Ok(e) if !e.paths.is_empty() && e.paths.iter().all(|p| not_config(p)) => return,
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        // The receiver is gone only when the watch is over.
        let _ = tx.send(msg);
    })
    .map_err(|e| Error::Io(std::io::Error::other(format!("cannot watch config: {e}"))))?;
    for path in &paths {
        watcher.watch(path, RecursiveMode::Recursive).map_err(|e| {
            Error::Io(std::io::Error::other(format!(
                "cannot watch {}: {e}",
                path.display()
            )))
        })?;
    }
    let weak = Arc::downgrade(&mesh.inner);
    drop(mesh);
    let task = runtime.spawn(run(weak, rx, debounce));
    Ok(WatchGuard {
        _watcher: watcher,
        task,
    })
}

async fn run(
    mesh: Weak<MeshInner>,
    mut rx: mpsc::UnboundedReceiver<Result<(), String>>,
    debounce: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut errors: Vec<String> = first.err().into_iter().collect();
        // Debounce: wait until no change arrives for `debounce`.
        loop {
            match tokio::time::timeout(debounce, rx.recv()).await {
                Ok(Some(next)) => errors.extend(next.err()),
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let Some(inner) = mesh.upgrade() else { return };
        let mesh = Mesh { inner };
        for message in errors {
            tracing::warn!("tower-mesh config watcher: {message}");
            mesh.send_event(MeshEvent::WatchError {
                message: message.into(),
            });
        }
        // Failures are logged and sent as events by reload itself.
        let _ = mesh.reload().await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn only_config_files_and_directories_trigger_a_reload() {
        assert!(!super::not_config(Path::new("/etc/mesh/vs.yaml")));
        assert!(!super::not_config(Path::new("/etc/mesh/vs.YML")));
        assert!(!super::not_config(Path::new("/etc/mesh/list.json")));
        assert!(!super::not_config(Path::new("/etc/mesh/..data")));
        assert!(!super::not_config(Path::new("/etc/mesh/..data_tmp")));
        assert!(!super::not_config(Path::new("/etc/mesh/sub")));
        assert!(super::not_config(Path::new("/etc/mesh/proxy.log")));
        assert!(super::not_config(Path::new("/etc/mesh/.vs.yaml.swp")));
        assert!(super::not_config(Path::new("/etc/mesh/vs.yaml~")));
    }
}
