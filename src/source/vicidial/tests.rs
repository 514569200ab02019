//! Unit tests of the VICIdial row mapping.
