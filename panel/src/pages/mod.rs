//! The panel's pages.

pub mod history;
pub mod home;
pub mod keys;
