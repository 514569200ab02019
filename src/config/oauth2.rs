//! The `oauth2` block: raw keys, validated at the level that sets them (an account, a group's
//! `defaults`, the global `defaults`), layered key by key like every other setting, and
//! checked for completeness per account.
//!
//! Secrets (`client_secret*`, `refresh_token_*`) are read where they are set; no message here
//! repeats a secret or a secret file's content.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{Lenient, MAX_PASSWORD_FILE, RawSecret, Unknown, Validator, kind};
use crate::oauth2::{DEFAULT_TIMEOUT, Endpoint, Grant, Secret, Settings};

/// The keys of an `oauth2` block.
pub(super) const KEYS: &[&str] = &[
    "grant",
    "token_url",
    "client_id",
    "client_secret",
    "client_secret_file",
    "client_secret_env",
    "scope",
    "refresh_token_file",
    "refresh_token_env",
    "token_file",
    "ca_file",
    "timeout",
];

/// The token request timeout's bounds.
const MIN_TOKEN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TOKEN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawOAuth2 {
    grant: Option<Value>,
    token_url: Option<Value>,
    client_id: Option<Value>,
    client_secret: Option<RawSecret>,
    client_secret_file: Option<Value>,
    client_secret_env: Option<Value>,
    scope: Option<Value>,
    refresh_token_file: Option<Value>,
    refresh_token_env: Option<Value>,
    token_file: Option<Value>,
    ca_file: Option<Value>,
    timeout: Option<Value>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrantKind {
    ClientCredentials,
    RefreshToken,
    TokenFile,
}

impl GrantKind {
    fn name(self) -> &'static str {
        match self {
            GrantKind::ClientCredentials => "client_credentials",
            GrantKind::RefreshToken => "refresh_token",
            GrantKind::TokenFile => "token_file",
        }
    }
}

/// One level's validated `oauth2` keys; `None` where the level does not set a key.
#[derive(Debug, Clone, Default)]
pub(super) struct OAuth2Layer {
    /// Whether any level has an `oauth2` block.
    present: bool,
    grant: Option<GrantKind>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    scope: Option<String>,
    /// The refresh token and where it was read (`env:NAME` or the file's path).
    refresh_token: Option<(Secret, String)>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    timeout: Option<Duration>,
}

impl OAuth2Layer {
    pub(super) fn present(&self) -> bool {
        self.present
    }

    /// `self` where set, `base` elsewhere.
    pub(super) fn over(&self, base: &OAuth2Layer) -> OAuth2Layer {
        OAuth2Layer {
            present: self.present || base.present,
            grant: self.grant.or(base.grant),
            token_url: self.token_url.clone().or_else(|| base.token_url.clone()),
            client_id: self.client_id.clone().or_else(|| base.client_id.clone()),
            client_secret: self
                .client_secret
                .clone()
                .or_else(|| base.client_secret.clone()),
            scope: self.scope.clone().or_else(|| base.scope.clone()),
            refresh_token: self
                .refresh_token
                .clone()
                .or_else(|| base.refresh_token.clone()),
            token_file: self.token_file.clone().or_else(|| base.token_file.clone()),
            ca_file: self.ca_file.clone().or_else(|| base.ca_file.clone()),
            timeout: self.timeout.or(base.timeout),
        }
    }
}

impl Validator<'_> {
    /// One level's `oauth2` block.
    pub(super) fn oauth2_layer(
        &mut self,
        location: &str,
        raw: Option<&Lenient<RawOAuth2>>,
    ) -> OAuth2Layer {
        let raw = match raw {
            None => return OAuth2Layer::default(),
            Some(Lenient::Invalid(v)) => {
                self.error(
                    location,
                    "oauth2",
                    format!("expected a mapping, found {}", kind(v)),
                );
                return OAuth2Layer::default();
            }
            Some(Lenient::Valid(raw)) => raw,
        };
        let here = format!("{location} / oauth2");
        self.unknown_keys(&here, &raw.unknown, KEYS);
        let grant = raw.grant.as_ref().and_then(|v| {
            let s = self.string(&here, "grant", v)?;
            match s.as_str() {
                "client_credentials" => Some(GrantKind::ClientCredentials),
                "refresh_token" => Some(GrantKind::RefreshToken),
                "token_file" => Some(GrantKind::TokenFile),
                _ => {
                    self.error(
                        &here,
                        "grant",
                        format!(
                            "{} is not a grant: use client_credentials, refresh_token or token_file",
                            super::quote(&s)
                        ),
                    );
                    None
                }
            }
        });
        let token_url = raw.token_url.as_ref().and_then(|v| {
            let s = self.string(&here, "token_url", v)?;
            match reqwest::Url::parse(&s) {
                Ok(url) if url.scheme() == "https" && url.host().is_some() => Some(s),
                Ok(_) => {
                    self.error(&here, "token_url", "must be an https URL");
                    None
                }
                Err(e) => {
                    self.error(&here, "token_url", format!("not a URL: {e}"));
                    None
                }
            }
        });
        let client_id = raw
            .client_id
            .as_ref()
            .and_then(|v| self.plain(&here, "client_id", v));
        let scope = raw
            .scope
            .as_ref()
            .and_then(|v| self.plain(&here, "scope", v));
        let client_secret = self
            .secret(
                &here,
                "client_secret",
                raw.client_secret.as_ref(),
                raw.client_secret_file.as_ref(),
                raw.client_secret_env.as_ref(),
            )
            .map(|(secret, _)| secret);
        let refresh_token = self.secret(
            &here,
            "refresh_token",
            None,
            raw.refresh_token_file.as_ref(),
            raw.refresh_token_env.as_ref(),
        );
        let token_file = raw
            .token_file
            .as_ref()
            .and_then(|v| self.path(&here, "token_file", v));
        let ca_file = raw.ca_file.as_ref().and_then(|v| {
            let path = self.path(&here, "ca_file", v)?;
            self.check_ca_file(&path)
                .map_err(|message| self.error(&here, "ca_file", message))
                .ok()?;
            Some(path)
        });
        let timeout = self.duration(
            &here,
            "timeout",
            raw.timeout.as_ref(),
            MIN_TOKEN_TIMEOUT,
            MAX_TOKEN_TIMEOUT,
        );
        OAuth2Layer {
            present: true,
            grant,
            token_url,
            client_id,
            client_secret,
            scope,
            refresh_token,
            token_file,
            ca_file,
            timeout,
        }
    }

    /// An account's token source settings, `None` without an `oauth2` block (or with errors,
    /// which are listed at the account).
    pub(super) fn oauth2_settings(
        &mut self,
        location: &str,
        layer: &OAuth2Layer,
    ) -> Option<Settings> {
        if !layer.present {
            return None;
        }
        let here = format!("{location} / oauth2");
        let Some(grant) = layer.grant else {
            self.error(
                &here,
                "grant",
                "missing: client_credentials, refresh_token or token_file",
            );
            return None;
        };
        let missing = |this: &mut Self, field: &str, set: bool| {
            if !set {
                this.error(
                    &here,
                    field,
                    format!("missing (needed by grant {})", grant.name()),
                );
            }
            set
        };
        let needs_endpoint = grant != GrantKind::TokenFile;
        let mut complete = true;
        if needs_endpoint {
            complete &= missing(self, "token_url", layer.token_url.is_some());
            complete &= missing(self, "client_id", layer.client_id.is_some());
        }
        match grant {
            GrantKind::ClientCredentials => {
                complete &= missing(self, "client_secret", layer.client_secret.is_some());
            }
            GrantKind::RefreshToken => {
                complete &= missing(self, "refresh_token_file", layer.refresh_token.is_some());
            }
            GrantKind::TokenFile => {
                complete &= missing(self, "token_file", layer.token_file.is_some());
            }
        }
        if !complete {
            return None;
        }
        let endpoint = || Endpoint {
            token_url: layer.token_url.clone().unwrap_or_default(),
            client_id: layer.client_id.clone().unwrap_or_default(),
            client_secret: layer.client_secret.clone(),
            scope: layer.scope.clone(),
        };
        let grant = match grant {
            GrantKind::ClientCredentials => Grant::ClientCredentials(endpoint()),
            GrantKind::RefreshToken => {
                let (refresh_token, from) = layer.refresh_token.clone()?;
                Grant::RefreshToken {
                    endpoint: endpoint(),
                    refresh_token,
                    from,
                }
            }
            GrantKind::TokenFile => Grant::TokenFile(layer.token_file.clone()?),
        };
        Some(Settings {
            grant,
            ca_file: layer.ca_file.clone(),
            timeout: layer.timeout.unwrap_or(DEFAULT_TIMEOUT),
        })
    }

    /// A non-empty string without control characters.
    fn plain(&mut self, location: &str, field: &str, value: &Value) -> Option<String> {
        let s = self.string(location, field, value)?;
        if s.trim().is_empty() {
            self.error(location, field, "is empty");
            return None;
        }
        if s.chars().any(char::is_control) {
            self.error(location, field, "contains a control character");
            return None;
        }
        Some(s)
    }

    /// At most one of `NAME`, `NAME_file`, `NAME_env`: the secret and where it came from. The
    /// OAuth2 secrets and an account source's database password are read through it.
    pub(super) fn secret(
        &mut self,
        location: &str,
        name: &str,
        inline: Option<&RawSecret>,
        file: Option<&Value>,
        env: Option<&Value>,
    ) -> Option<(Secret, String)> {
        let set = [inline.is_some(), file.is_some(), env.is_some()];
        if set.iter().filter(|s| **s).count() > 1 {
            self.error(
                location,
                name,
                format!("set only one of {name}, {name}_file and {name}_env"),
            );
            return None;
        }
        let (field, value, from) = if let Some(RawSecret(v)) = inline {
            let Value::String(s) = v else {
                self.error(
                    location,
                    name,
                    format!("expected a string (quote it), found {}", kind(v)),
                );
                return None;
            };
            (name.to_owned(), s.clone(), "config".to_owned())
        } else if let Some(v) = file {
            let field = format!("{name}_file");
            let path = self.path(location, &field, v)?;
            let bytes = match self.files.read(&path, MAX_PASSWORD_FILE) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.error(
                        location,
                        &field,
                        "no such file (the path is not repeated: it may be a secret)",
                    );
                    return None;
                }
                Err(e) => {
                    self.error(location, &field, format!("cannot read {path:?}: {e}"));
                    return None;
                }
            };
            let Ok(text) = String::from_utf8(bytes) else {
                self.error(location, &field, format!("{path:?} is not UTF-8 text"));
                return None;
            };
            (
                field,
                text.trim_end_matches(['\r', '\n']).to_owned(),
                path.display().to_string(),
            )
        } else {
            let field = format!("{name}_env");
            let var = self.string(location, &field, env?)?;
            let value = self.env_value(location, &field, &var, "a secret")?;
            (field, value, format!("env:{var}"))
        };
        if value.is_empty() {
            self.error(location, &field, "is empty");
            return None;
        }
        if value.contains(['\r', '\n', '\0']) {
            self.error(location, &field, "contains a line break or NUL");
            return None;
        }
        Some((Secret::new(value), from))
    }
}

#[cfg(test)]
mod tests;
