//! The client commands of the `cellgate` binary: `md5` and `submit`, which talk to a gateway
//! over HTTPS ([`http`]), stream uploads from disk ([`upload`]), follow a job to its end
//! ([`wait`]) and show progress on a terminal ([`progress`]).

pub mod http;
pub mod md5;
pub mod progress;
pub mod submit;
pub mod upload;
pub mod wait;
