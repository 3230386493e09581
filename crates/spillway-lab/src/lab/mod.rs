//! The overload lab (temporary module list; the report lands with its own commit).
pub mod results;
pub mod run;
pub use results::{LabResults, Run, Sample};
