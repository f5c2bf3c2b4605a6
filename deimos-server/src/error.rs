//! Why `deimos` could not start. Printed by `main` (with its causes) before exiting 1.

use std::path::PathBuf;

use crate::config::{ConfigError, UrlError};
use crate::identity::IdentityError;
use crate::limits::TooFewDescriptors;
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Descriptors(#[from] TooFewDescriptors),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("metrics: {0}")]
    Metrics(#[source] metrics_exporter_prometheus::BuildError),
    #[error("listen on {url}: {source}")]
    Listen {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open data dir {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: deimos_store::persist::PersistError,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("--force-new-cluster: {0}")]
    ForceNewCluster(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    StateMachine(#[from] deimos_raft::driver::StateMachineError),
    #[error(
        "member {id} was removed from the cluster and cannot rejoin with this data: wipe {} and \
         add it again (it gets a new id)",
        path.display()
    )]
    Removed {
        id: deimos_raft::ids::Id,
        path: PathBuf,
    },
    #[error("lease settings: {0}")]
    Lease(#[from] deimos_raft::lease::LeaseConfigError),
    #[error(transparent)]
    Driver(#[from] deimos_raft::driver::StartError),
    #[error("cannot start the raft driver thread: {0}")]
    Thread(#[source] std::io::Error),
}
