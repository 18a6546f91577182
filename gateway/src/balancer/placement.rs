//! A kernel placement in progress: it counts against its runner from the moment the runner is
//! chosen until the runner answers, even if the request is dropped halfway.

use std::sync::Arc;

use super::backend::Backend;

#[derive(Debug)]
pub struct Placement {
    backend: Arc<Backend>,
    started: bool,
}

impl Placement {
    /// Counts a placement on `backend`; the caller has chosen it.
    pub(super) fn start(backend: Arc<Backend>) -> Placement {
        backend.placement_started();
        Placement {
            backend,
            started: false,
        }
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The runner started the kernel; it now counts as one of the runner's kernels.
    pub fn succeeded(mut self) {
        self.started = true;
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.backend.placement_answered(self.started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    #[test]
    fn a_placement_counts_until_it_ends_and_only_success_adds_a_kernel() {
        let backend = Arc::new(Backend::new(0, Url::parse("http://127.0.0.1:1").unwrap()));
        let placement = Placement::start(backend.clone());
        assert_eq!(backend.load().in_flight, 1);
        drop(placement);
        assert_eq!((backend.load().in_flight, backend.load().kernels), (0, 0));
        Placement::start(backend.clone()).succeeded();
        assert_eq!((backend.load().in_flight, backend.load().kernels), (0, 1));
    }
}
