//! mailbox_exporter: logs in to POP3 and IMAP mailboxes and reports, per account, whether
//! authentication works, how, and why not.
//!
//! Data flow: the [`config`] names the accounts; the [`schedule`]r runs a [`probe`] of each
//! on its interval; a probe ends in a [`verdict`]; the verdict is recorded in the account
//! store ([`metrics::store`]); a scrape reads the store through the exposition
//! ([`metrics::exposition`]) and the pages read it through [`metrics::view`] and [`page`];
//! [`web`] serves both. [`app`] wires these together and reloads the config.
//!
//! Layout, in that order:
//! - Configuration: [`config`] (raw to validated), [`files`] (operator-named files: regular
//!   files only, bounded, with a deadline), [`secret`] (passwords that never print),
//!   [`source`] (account sources beside the config file: VICIdial's database), [`shard`]
//!   (replicas' shares of the accounts).
//! - Scheduling: [`schedule`] (the scheduler and worker pool), [`budget`] (the failed-login
//!   budget of each server), [`state`] (one account's history and the pure rules that update
//!   it after a probe).
//! - Probing: [`probe`] (the login ladders that turn a [`probe::Target`] into a
//!   [`verdict::Verdict`]) over [`proto`] (sans-IO POP3/IMAP parsing and SASL), [`conn`] (the
//!   bounded line-oriented connection), [`tls`] (connectors and certificate facts), [`token`]
//!   and [`oauth2`] (OAuth2 access tokens and where they come from); [`transcript`] is the
//!   redacted record of a dialogue.
//! - Outcome: [`verdict`], the vocabulary of a probe's outcome (methods, reasons, phases).
//! - Store and readings: [`metrics`]: the [`metrics::store`] probes write, the
//!   [`metrics::view`] the pages read and the [`metrics::exposition`] scrapes read; [`page`]
//!   renders the HTML landing and per-account pages.
//! - Serving: [`web`], the HTTP endpoints and the web config file (basic auth, TLS).
//! - Around it: [`app`] (the service: config, reloads, scheduler and web side together),
//!   [`cli`] (the command line), [`logfmt`] (the log line format), [`sim`] (scripted
//!   POP3/IMAP servers for tests, the demo and benchmarks), [`demo`] (the exporter against
//!   them).
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
