//! IMAP.
