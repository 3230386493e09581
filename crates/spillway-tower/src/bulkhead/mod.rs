//! [`BulkheadLayer`]: partitions with guaranteed shares that may borrow spare capacity.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::BulkheadLayer;
pub use service::Bulkhead;
