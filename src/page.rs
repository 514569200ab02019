//! The HTML pages: the landing page (every account, its status and what to change) and one
//! page per account with its last verdict and redacted transcript. Pure functions over
//! [`AccountView`]s; every piece of text is escaped, nothing is loaded from elsewhere.
