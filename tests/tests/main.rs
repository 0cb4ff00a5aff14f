//! The end-to-end suite: one test binary, a module per story. Each story
//! drives the real `token` and `tokend` binaries against the real parts
//! (oidc-provider, gnome-keyring, git, kubectl, sshd, Chromium, Wine) through
//! `tokend_e2e` (tests/support). Run one story with
//! `scripts/test -p tokend-e2e --test e2e -- STORY::`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The Stack Exchange stub, shared by the stories that speak its flavour.
#[path = "../se_stub/stub.rs"]
mod stub;

mod cargo;
mod chromium;
mod clients;
mod confidential;
mod config;
mod crash;
mod device;
mod docker;
mod downscope;
mod dpop;
mod expiry;
mod faults;
mod first_hour;
mod git;
mod harness;
mod idtoken;
mod kubectl;
mod lifecycle;
mod login;
mod login_outcomes;
mod logout;
mod loopback;
mod loopback_flood;
mod messages;
mod offline_access;
mod one_owner;
mod persistence;
mod presets;
mod protocol;
mod proxy;
mod readme;
mod refresh;
mod refresh_faults;
mod reload;
mod service_files;
mod share;
mod shell;
mod socket;
mod ssh;
mod stackexchange;
mod static_client;
mod stop;
mod suspend;
mod token_files;
mod trust;
mod url_map;
mod windows;
mod workload;
