//! The gateway's URL space: which paths exist, the methods each takes, and which need no
//! token.

use http::Method;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    /// `GET /metrics`: Prometheus text; needs the token like the API.
    Metrics,
    Login,
    Logout,
    Home,
    /// `GET /jobs`: the job manager page.
    JobsPage,
    /// `GET /notebook`: the notebook editor page.
    NotebookPage,
    /// `GET /cluster`: nodes, runners, throughput and events.
    ClusterPage,
    /// `GET /api/cluster`: the cluster page's data as one JSON snapshot.
    ClusterSnapshot,
    /// `GET /api/cluster/stream`: the same snapshot as server-sent events, after every sample.
    ClusterStream,
    /// `GET /static/NAME`: a page's script; public, it holds nothing secret.
    Script(String),
    /// `GET /api`: the server version, as jupyter_server answers it.
    ApiVersion,
    KernelSpecs,
    KernelSpec(String),
    Kernels,
    Kernel(Uuid),
    Interrupt(Uuid),
    Restart(Uuid),
    Channels(Uuid),
    /// A kernel route whose id is not a UUID: no such kernel can exist.
    NoSuchKernel(String),
    /// `/api/jobs...` and `/api/nodes`: forwarded whole to a runner, which checks the rest.
    Jobs,
}

impl Route {
    /// The route for a request path; a trailing slash is ignored, as Jupyter does.
    pub fn parse(path: &str) -> Option<Route> {
        let trimmed = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
        let route = match segments.as_slice() {
            [""] => Route::Home,
            ["jobs"] => Route::JobsPage,
            ["notebook"] => Route::NotebookPage,
            ["cluster"] => Route::ClusterPage,
            ["static", name] if crate::pages::is_script(name) => Route::Script((*name).to_owned()),
            ["healthz"] => Route::Health,
            ["metrics"] => Route::Metrics,
            ["login"] => Route::Login,
            ["logout"] => Route::Logout,
            ["api"] => Route::ApiVersion,
            ["api", "kernelspecs"] => Route::KernelSpecs,
            ["api", "kernelspecs", name] if is_kernelspec_name(name) => {
                Route::KernelSpec((*name).to_owned())
            }
            ["api", "kernels"] => Route::Kernels,
            ["api", "cluster"] => Route::ClusterSnapshot,
            ["api", "cluster", "stream"] => Route::ClusterStream,
            ["api", "jobs", ..] | ["api", "nodes"] => Route::Jobs,
            ["api", "kernels", id, rest @ ..] => {
                let Ok(kernel) = Uuid::parse_str(id) else {
                    return (rest.len() <= 1).then(|| Route::NoSuchKernel((*id).to_owned()));
                };
                match rest {
                    [] => Route::Kernel(kernel),
                    ["interrupt"] => Route::Interrupt(kernel),
                    ["restart"] => Route::Restart(kernel),
                    ["channels"] => Route::Channels(kernel),
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(route)
    }

    pub fn methods(&self) -> &'static [Method] {
        match self {
            Route::Login => &[Method::GET, Method::POST],
            Route::Kernels => &[Method::GET, Method::POST],
            Route::Kernel(_) => &[Method::GET, Method::DELETE],
            Route::Interrupt(_) | Route::Restart(_) => &[Method::POST],
            Route::NoSuchKernel(_) | Route::Jobs => &[Method::GET, Method::POST, Method::DELETE],
            Route::Health
            | Route::Metrics
            | Route::Logout
            | Route::Home
            | Route::JobsPage
            | Route::NotebookPage
            | Route::ClusterPage
            | Route::ClusterSnapshot
            | Route::ClusterStream
            | Route::Script(_)
            | Route::ApiVersion
            | Route::KernelSpecs
            | Route::KernelSpec(_)
            | Route::Channels(_) => &[Method::GET],
        }
    }

    /// Routes anyone may use: health checks, and the pages that log a browser in or out.
    pub fn is_public(&self) -> bool {
        matches!(
            self,
            Route::Health | Route::Login | Route::Logout | Route::Script(_)
        )
    }

    /// Routes a person opens in a browser: without a token they go to the login page instead
    /// of getting a JSON error.
    pub fn is_page(&self) -> bool {
        matches!(
            self,
            Route::Home
                | Route::JobsPage
                | Route::NotebookPage
                | Route::ClusterPage
                | Route::Login
                | Route::Logout
        )
    }
}

/// Jupyter kernelspec names: letters, digits, `-`, `_` and `.`, starting with a letter or
/// digit so that no name reads as a relative path.
fn is_kernelspec_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    #[test]
    fn jupyter_paths_map_to_routes() {
        let kernel = Uuid::parse_str(ID).unwrap();
        let cases = [
            ("/", Route::Home),
            ("/jobs", Route::JobsPage),
            ("/notebook", Route::NotebookPage),
            ("/cluster", Route::ClusterPage),
            ("/api/cluster", Route::ClusterSnapshot),
            ("/api/cluster/stream", Route::ClusterStream),
            ("/static/cluster.js", Route::Script("cluster.js".into())),
            ("/static/jobs.js", Route::Script("jobs.js".into())),
            ("/static/notebook.js", Route::Script("notebook.js".into())),
            ("/healthz", Route::Health),
            ("/metrics", Route::Metrics),
            ("/api", Route::ApiVersion),
            ("/api/", Route::ApiVersion),
            ("/api/kernelspecs", Route::KernelSpecs),
            (
                "/api/kernelspecs/python3",
                Route::KernelSpec("python3".into()),
            ),
            ("/api/kernels/", Route::Kernels),
            (&format!("/api/kernels/{ID}"), Route::Kernel(kernel)),
            (
                &format!("/api/kernels/{ID}/interrupt"),
                Route::Interrupt(kernel),
            ),
            (
                &format!("/api/kernels/{ID}/restart"),
                Route::Restart(kernel),
            ),
            (
                &format!("/api/kernels/{ID}/channels"),
                Route::Channels(kernel),
            ),
            ("/api/kernels/nope", Route::NoSuchKernel("nope".into())),
            ("/api/jobs", Route::Jobs),
            (&format!("/api/jobs/{ID}/files/stdout"), Route::Jobs),
            ("/api/nodes", Route::Jobs),
        ];
        for (path, route) in cases {
            assert_eq!(Route::parse(path), Some(route), "{path}");
        }
    }

    #[test]
    fn unknown_paths_have_no_route() {
        for path in [
            "/nope",
            "/api/kernels/x/y/z",
            &format!("/api/kernels/{ID}/explode"),
            "/api/kernelspecs/../../etc",
            "/api/kernelspecs/..",
            "/static/../Cargo.toml",
            "/static/other.js",
        ] {
            assert_eq!(Route::parse(path), None, "{path}");
        }
    }

    #[test]
    fn only_health_and_login_are_public() {
        assert!(Route::Health.is_public() && Route::Login.is_public());
        assert!(!Route::Home.is_public() && !Route::Kernels.is_public());
        assert!(!Route::Metrics.is_public());
        assert!(!Route::ClusterPage.is_public() && Route::ClusterPage.is_page());
        assert!(!Route::ClusterSnapshot.is_public() && !Route::ClusterSnapshot.is_page());
        assert!(!Route::Channels(Uuid::nil()).is_public());
    }
}
