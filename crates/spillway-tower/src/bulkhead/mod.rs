//! [`BulkheadLayer`]: partitions with guaranteed shares that may borrow spare capacity.

mod layer;
mod service;

pub use layer::BulkheadLayer;
pub use service::Bulkhead;
