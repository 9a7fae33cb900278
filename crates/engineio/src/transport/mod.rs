//! The two transports of Engine.IO v4.

pub(crate) mod polling;
pub(crate) mod websocket;
