//! [`LoadShedLayer`]: priority load shedding by request criticality.

mod layer;
mod service;

pub use layer::LoadShedLayer;
pub use service::LoadShed;
