//! Token requests to an OAuth2 token endpoint (RFC 6749) with the `oauth2` crate over
//! `reqwest` on native-tls: verified HTTPS only, no redirects, a timeout, an optional extra CA.

use std::error::Error as _;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponse, BasicTokenResponse};
use oauth2::{
    ClientId, ClientSecret, EndpointNotSet, EndpointSet, HttpClientError, RefreshToken,
    RequestTokenError, Scope, TokenResponse, TokenUrl,
};

use super::cache::{Fetch, FetchError, FetchFuture, Fetched};
use super::{Endpoint, cut, host};
use crate::token::{AccessToken, TokenError};

/// Largest CA file read.
const MAX_CA_FILE: u64 = 1024 * 1024;
/// Longest provider `error_description` kept.
const MAX_DESCRIPTION: usize = 200;

type Client =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

pub(crate) struct TokenRequest {
    client: Client,
    http: reqwest::Client,
    refresh_token: Option<RefreshToken>,
    scopes: Vec<Scope>,
    /// `host[:port]` of the token URL, to say which endpoint failed.
    host: String,
    timeout: Duration,
}

impl TokenRequest {
    /// A request for `endpoint`, with the refresh token grant when `refresh_token` is given.
    /// Fails on a token URL that is not `https` and on an unreadable `ca_file`.
    pub fn new(
        endpoint: &Endpoint,
        refresh_token: Option<&str>,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<TokenRequest, String> {
        let url =
            TokenUrl::new(endpoint.token_url.clone()).map_err(|e| format!("token_url: {e}"))?;
        if url.url().scheme() != "https" {
            return Err("token_url: must be an https URL".into());
        }
        let mut client =
            BasicClient::new(ClientId::new(endpoint.client_id.clone())).set_token_uri(url);
        if let Some(secret) = &endpoint.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
        }
        let mut http = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(path) = ca_file {
            let pem = crate::files::read(path, MAX_CA_FILE)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            if certificates.is_empty() {
                return Err(format!("ca_file {}: no PEM certificate", path.display()));
            }
            for certificate in certificates {
                http = http.add_root_certificate(certificate);
            }
        }
        let http = http.build().map_err(|e| format!("HTTP client: {e}"))?;
        let scopes = endpoint
            .scope
            .iter()
            .flat_map(|s| s.split_whitespace())
            .map(|s| Scope::new(s.to_owned()))
            .collect();
        Ok(TokenRequest {
            client,
            http,
            refresh_token: refresh_token.map(|t| RefreshToken::new(t.to_owned())),
            scopes,
            host: host(&endpoint.token_url),
            timeout,
        })
    }

    async fn request(&self) -> Result<Fetched, FetchError> {
        let call = Recording {
            http: self.http.clone(),
            status: Mutex::new(None),
        };
        let result: Result<BasicTokenResponse, _> = match &self.refresh_token {
            Some(refresh_token) => {
                self.client
                    .exchange_refresh_token(refresh_token)
                    .add_scopes(self.scopes.clone())
                    .request_async(&call)
                    .await
            }
            None => {
                self.client
                    .exchange_client_credentials()
                    .add_scopes(self.scopes.clone())
                    .request_async(&call)
                    .await
            }
        };
        let status = *call.status.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(answer) => Ok(Fetched {
                token: AccessToken::new(answer.access_token().secret().clone()),
                expires_in: answer.expires_in(),
            }),
            Err(error) => Err(self.failure(error, status)),
        }
    }

    /// Says why the request failed, from the provider's `error` and `error_description` and
    /// the HTTP status; never from a response body, which might hold a token.
    fn failure(
        &self,
        error: RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>,
        status: Option<u16>,
    ) -> FetchError {
        let http = status.map(|s| format!("HTTP {s}: ")).unwrap_or_default();
        let (result, text) = match error {
            RequestTokenError::ServerResponse(answer) => {
                let mut text = format!("{http}{}", answer.error());
                if let Some(description) = answer.error_description() {
                    text.push_str(&format!(" ({})", cut(description, MAX_DESCRIPTION)));
                }
                ("error", text)
            }
            RequestTokenError::Parse(error, _) if status == Some(200) => (
                "malformed",
                format!("{http}malformed token answer (at `{}`)", error.path()),
            ),
            RequestTokenError::Parse(..) => ("error", format!("{http}not an OAuth2 answer")),
            RequestTokenError::Request(HttpClientError::Reqwest(error)) => {
                ("unreachable", describe(&error, self.timeout))
            }
            RequestTokenError::Request(error) => ("unreachable", cut(&error.to_string(), 200)),
            RequestTokenError::Other(text) => ("error", format!("{http}{}", cut(&text, 200))),
        };
        FetchError {
            result,
            error: TokenError::new(format!("token endpoint {}: {text}", self.host)),
        }
    }
}

/// The HTTP client, remembering the status of the answer (the `oauth2` crate drops it).
struct Recording {
    http: reqwest::Client,
    status: Mutex<Option<u16>>,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Recording {
    type Error = HttpClientError<reqwest::Error>;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self.http.call(request).await?;
            *self.status.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(response.status().as_u16());
            Ok(response)
        })
    }
}

/// A transport failure in words: timeout, or the error chain without the URL.
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    let head = if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    cut(&format!("{head}: {}", parts.join(": ")), 300)
}

impl Fetch for TokenRequest {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(self.request())
    }
}
