use berth_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot make an HTTP client: {0}")]
    Client(reqwest::Error),
    /// A webhook that is not acceptable (said why).
    #[error("{0}")]
    InvalidWebhook(String),
}
