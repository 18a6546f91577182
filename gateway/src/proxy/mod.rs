//! The mechanics of proxying to runners: the pooled HTTP client ([`upstream`]), which headers
//! cross ([`headers`]), REST forwarding ([`rest`]), websocket handshakes ([`websocket`]), frame
//! pumping ([`pump`]), timing cells on the way through ([`timing`]) and the life of one
//! proxied websocket ([`session`]). Which runner to talk to is decided by the callers in `api`.

pub mod headers;
pub mod pump;
pub mod read_ahead;
pub mod rest;
pub mod session;
pub mod timing;
pub mod upstream;
pub mod websocket;
