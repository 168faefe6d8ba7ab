//! The panel's pages.

pub mod home;
