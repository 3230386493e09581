//! The std/loom shim: lock-free code imports its atomics, locks and cells from here so that
//! `RUSTFLAGS="--cfg loom" cargo test --release -p spillway --test loom_<name>` can model-check it.

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::{
    hint::spin_loop,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence},
    },
    thread::{self, Thread},
};

#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::{
    hint::spin_loop,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence},
    },
    thread::{self, Thread},
};

/// `UnsafeCell` with loom's closure API, so the same code runs under both.
#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `UnsafeCell` with loom's closure API, so the same code runs under both.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Keeps a value on its own cache line(s), so that two atomics written by different threads do
/// not bounce one line between cores (128 bytes: adjacent-line prefetch pairs lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Orders a SeqCst read-modify-write before a later SeqCst load of another atomic, for loom.
///
/// The C++ model already forbids both sides of a Dekker pair (RMW on `a` then load of `b`,
/// against RMW on `b` then load of `a`, all SeqCst) from missing each other, and that is what
/// production code relies on (on x86 the RMW is a full barrier). Loom models SeqCst loads as
/// acquire loads, so under loom an explicit fence stands in for that guarantee.
#[inline(always)]
pub(crate) fn dekker_fence() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}
