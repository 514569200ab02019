//! POP3.
