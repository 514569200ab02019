//! Sans-IO protocol code: reply and capability parsing for POP3 and IMAP, and the SASL
//! computations. Pure functions over lines, tested with byte literals and RFC vectors.

pub mod imap;
pub mod pop3;
pub mod sasl;
