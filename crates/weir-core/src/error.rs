//! The core's domain errors. The core does not know the public wire codes; front ends map these
//! to codes in one function each side of the boundary.

use weir_batch::BatchError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("unknown exchange '{0}'")]
    UnknownExchange(String),
    #[error("exchange '{0}' already exists")]
    ExchangeExists(String),
    #[error("no binding of exchange '{exchange}' matches routing key '{routing_key}'")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("backlog of subscription '{group}' on '{topic}' is full; consumers must catch up")]
    BacklogFull { topic: String, group: String },
    #[error("no subscription '{group}' on topic '{topic}'")]
    NoSuchSubscription { topic: String, group: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("batch of {length} bytes exceeds the maximum of {limit}")]
    PayloadTooLarge { length: usize, limit: usize },
    #[error("malformed batch: {0}")]
    MalformedBatch(BatchError),
    #[error("storage full")]
    StorageFull,
    #[error("storage poisoned by a failed sync; restart the broker to recover")]
    StoragePoisoned,
    /// The partition's writer failed in a way it cannot recover from (a panic); writes to it
    /// fail until the broker restarts. Not worth retrying.
    #[error(
        "partition {partition} of topic '{topic}' stopped after an internal failure ({reason}); restart the broker to recover"
    )]
    PartitionPoisoned {
        topic: String,
        partition: u32,
        reason: String,
    },
    /// The broker ran out of file descriptors; nothing was changed. Retry later.
    #[error("too many open files: {0}")]
    TooManyOpenFiles(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
}

impl From<weir_storage::Error> for Error {
    fn from(error: weir_storage::Error) -> Self {
        match error {
            weir_storage::Error::StorageFull { .. } => Error::StorageFull,
            weir_storage::Error::Poisoned => Error::StoragePoisoned,
            weir_storage::Error::TooManyOpenFiles { path } => {
                Error::TooManyOpenFiles(path.display().to_string())
            }
            weir_storage::Error::BatchTooLarge { length, limit } => {
                Error::PayloadTooLarge { length, limit }
            }
            other => Error::Storage(other.to_string()),
        }
    }
}

impl From<BatchError> for Error {
    fn from(error: BatchError) -> Self {
        match error {
            BatchError::TooLarge { length, limit } => Error::PayloadTooLarge { length, limit },
            other => Error::MalformedBatch(other),
        }
    }
}
