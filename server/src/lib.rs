//! Orchestrator Status server: the status API, the query router that makes
//! the decisions, and the built panel, all behind one axum [`app()`].
//!
//! `main.rs` only parses flags, binds, serves and shuts down; everything a
//! test needs is reachable from here without a socket.

pub mod access;
pub mod api;
pub mod app;
pub mod assessor;
pub mod changes;
pub mod cluster;
pub mod config;
pub mod error;
pub mod eval;
pub mod extract;
pub mod heuristic;
pub mod history;
pub mod keys;
pub mod logwriter;
pub mod openai;
pub mod openapi;
pub mod panel;
pub mod pipeline;
pub mod places;
pub mod readers;
pub mod replay;
pub mod router_headers;
pub mod routing;
pub mod scorer;
pub mod serve;
pub mod service;
pub mod shadow;
pub mod start;
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod upstream;

pub use app::app;
pub use state::{
    AppState, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_EXPORTS, DEFAULT_WRITE_TIMEOUT, NOSNIFF,
    Options, Shared,
};
