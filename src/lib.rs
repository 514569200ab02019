//! mailbox_exporter: logs in to POP3 and IMAP mailboxes and reports, per account, whether
//! authentication works, how, and why not.
//!
//! Layout:
//! - [`verdict`]: the vocabulary of a probe's outcome (methods, reasons, phases).
//! - [`proto`]: sans-IO POP3/IMAP reply parsing and SASL computations.
//! - [`conn`]: the bounded, line-oriented connection every dialogue runs over.
//! - [`transcript`]: the redacted record of a dialogue.
//! - [`tls`]: TLS connectors and certificate facts.
//! - [`token`]: OAuth2 access tokens and the sources the probe asks for them.
//! - [`probe`]: the login ladders that turn a [`probe::Target`] into a [`verdict::Verdict`].
//! - [`files`]: reading operator-named files: regular files only, bounded, with a deadline.
//! - [`config`]: configuration, raw to validated.
//! - [`cli`]: the command line and what its commands print.
//! - [`logfmt`]: the logfmt log line format.
//! - [`source`]: account sources beside the config file (VICIdial's database).
//! - [`shard`]: replicas' shares of the accounts and the stable hash of account names.
//! - [`schedule`]: the scheduler and worker pool.
//! - [`budget`]: the failed-login budget of each server.
//! - [`state`]: one account's history and the pure rules that update it after a probe.
//! - [`metrics`]: every account's state and its Prometheus exposition.
//! - [`page`]: the HTML landing page and per-account pages.
//! - [`sim`]: scripted POP3/IMAP servers for tests, the demo and benchmarks.
//! - [`web`]: the HTTP endpoints and the web config file (basic auth, TLS).
//! - [`app`]: the exporter service: config, reloads, scheduler and web side together.
//! - [`demo`]: the exporter against built-in simulated mail servers.
#![forbid(unsafe_code)]

pub mod app;
pub mod budget;
pub mod cli;
pub mod config;
pub mod conn;
pub mod demo;
pub mod files;
pub mod logfmt;
pub mod metrics;
pub mod oauth2;
pub mod page;
pub mod probe;
pub mod proto;
pub mod schedule;
pub mod secret;
pub mod shard;
pub mod sim;
pub mod source;
pub mod state;
pub mod tls;
pub mod token;
pub mod transcript;
pub mod verdict;
pub mod web;
