//! Sending one request until it gives an answer worth reading: timeouts, a size limit,
//! gzip, retries with exponential backoff and jitter on timeouts, 429 and 5xx (honouring
//! `Retry-After`), no retry on other 4xx unless the API's error code says so, and
//! asynchronous reports (201/202) polled until ready within a bounded time.

use std::io::Read;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

use super::template::Secrets;
use crate::connector::Cancel;

/// How hard to try.
#[derive(Debug, Clone)]
pub struct Policy {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_bytes: u64,
    /// Attempts per request for transient failures (timeouts, 429, 5xx).
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this fails the run instead of blocking it.
    pub max_retry_after: Duration,
    /// How long a report may take to be ready (201/202 answers).
    pub poll_max_wait: Duration,
    /// The header with the seconds to wait before asking again (`retryIn` for Direct);
    /// `Retry-After` is always read too.
    pub poll_header: Option<String>,
    /// 4xx answers whose error code (at `error_code_at` in the JSON body) means "try again
    /// later".
    pub retry_error_codes: Vec<i64>,
    pub error_code_at: Option<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_bytes: 200 * 1024 * 1024,
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
            poll_max_wait: Duration::from_secs(600),
            poll_header: None,
            retry_error_codes: Vec::new(),
            error_code_at: None,
        }
    }
}

/// One request, ready to send (the real texts) and to show (secrets as `${NAME}`).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub shown: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// A final answer.
#[derive(Debug)]
pub struct Answer {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub attempts: u32,
}

/// Why a request gave nothing.
#[derive(Debug)]
pub enum Failure {
    Cancelled,
    Failed(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Failed(message)
    }
}

pub fn client(policy: &Policy) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(policy.connect_timeout)
        .timeout(policy.timeout)
        .user_agent(concat!("krscore/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(|err| format!("cannot set up the HTTP client: {err}"))
}

/// Sends `request` until it succeeds, fails for good, or the run is cancelled.
pub async fn send(
    client: &reqwest::Client,
    request: &Request,
    policy: &Policy,
    secrets: &Secrets,
    cancel: &Cancel,
) -> Result<Answer, Failure> {
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut failures = 0u32;
    loop {
        if cancel.is_cancelled() {
            return Err(Failure::Cancelled);
        }
        attempts += 1;
        let outcome = tokio::select! {
            outcome = once(client, request, policy) => outcome,
            _ = cancelled(cancel) => return Err(Failure::Cancelled),
        };
        let shown = &request.shown;
        let (wait, why) = match outcome {
            Attempt::Done(status, headers, body) => {
                let code = status.as_u16();
                if code == 202
                    || code == 201
                        && (body.iter().all(u8::is_ascii_whitespace)
                            || policy
                                .poll_header
                                .as_ref()
                                .is_some_and(|h| headers.contains_key(h.as_str())))
                {
                    let wait = poll_wait(&headers, policy).unwrap_or(Duration::from_secs(5));
                    if started.elapsed() + wait > policy.poll_max_wait {
                        return Err(Failure::Failed(format!(
                            "{shown}: the report was still not ready after {} s ({attempts} \
                             requests); the limit is {} s",
                            started.elapsed().as_secs(),
                            policy.poll_max_wait.as_secs()
                        )));
                    }
                    tracing::info!(
                        url = %shown,
                        status = code,
                        wait_ms = wait.as_millis() as u64,
                        "report not ready yet; asking again"
                    );
                    wait_for(wait, cancel).await?;
                    continue;
                }
                if status.is_success() {
                    return Ok(Answer {
                        headers,
                        body,
                        attempts,
                    });
                }
                let excerpt = excerpt(&secrets.redact(&String::from_utf8_lossy(&body)));
                let why = format!("{shown} answered {status}: {excerpt}");
                let retry_after = retry_after(&headers);
                let transient = code == 429
                    || status.is_server_error()
                    || (status.is_client_error() && retryable_code(&body, policy));
                if !transient {
                    return Err(Failure::Failed(why));
                }
                (retry_after, why)
            }
            Attempt::Transient(message) => (None, format!("{shown}: {message}")),
            Attempt::Fatal(message) => return Err(Failure::Failed(format!("{shown}: {message}"))),
        };
        failures += 1;
        if failures >= policy.max_attempts {
            return Err(Failure::Failed(format!(
                "gave up after {failures} attempts: {why}"
            )));
        }
        let wait = match wait {
            Some(wait) if wait > policy.max_retry_after => {
                return Err(Failure::Failed(format!(
                    "{why} (it asks to wait {} s, more than the {} s allowed)",
                    wait.as_secs(),
                    policy.max_retry_after.as_secs()
                )));
            }
            Some(wait) => wait,
            None => backoff(policy, failures),
        };
        tracing::warn!(
            attempt = failures,
            wait_ms = wait.as_millis() as u64,
            error = %why,
            "request failed; retrying"
        );
        wait_for(wait, cancel).await?;
    }
}

enum Attempt {
    Done(reqwest::StatusCode, HeaderMap, Vec<u8>),
    Transient(String),
    Fatal(String),
}

async fn once(client: &reqwest::Client, request: &Request, policy: &Policy) -> Attempt {
    let mut builder = client
        .request(request.method.clone(), &request.url)
        .header(reqwest::header::ACCEPT_ENCODING, "gzip");
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let response = match builder.send().await {
        Ok(response) => response,
        Err(err) => return transport(err),
    };
    let status = response.status();
    let headers = response.headers().clone();
    let gzip = headers
        .get(reqwest::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if let Some(length) = response.content_length()
        && length > policy.max_bytes
    {
        return Attempt::Fatal(too_large(policy));
    }
    let mut body = Vec::new();
    let mut response = response;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > policy.max_bytes {
                    return Attempt::Fatal(too_large(policy));
                }
            }
            Ok(None) => break,
            Err(err) => {
                return match transport(err) {
                    Attempt::Fatal(message) => Attempt::Transient(message),
                    other => other,
                };
            }
        }
    }
    if gzip {
        let mut plain = Vec::new();
        let read = flate2::read::GzDecoder::new(body.as_slice())
            .take(policy.max_bytes + 1)
            .read_to_end(&mut plain);
        match read {
            Ok(_) if plain.len() as u64 > policy.max_bytes => {
                return Attempt::Fatal(too_large(policy));
            }
            Ok(_) => body = plain,
            Err(err) => return Attempt::Fatal(format!("the gzip body cannot be read: {err}")),
        }
    }
    Attempt::Done(status, headers, body)
}

fn too_large(policy: &Policy) -> String {
    format!(
        "the response is larger than the {} MB allowed ([request] max_response_mb)",
        policy.max_bytes / (1024 * 1024)
    )
}

/// Transport errors: timeouts and broken connections are worth another try.
fn transport(err: reqwest::Error) -> Attempt {
    let transient = err.is_timeout() || err.is_connect() || err.is_body() || err.is_request();
    let timeout = err.is_timeout();
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    if timeout {
        message = format!("timed out ({message})");
    }
    if transient {
        Attempt::Transient(message)
    } else {
        Attempt::Fatal(message)
    }
}

fn excerpt(body: &str) -> String {
    let text: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        "(empty body)".into()
    } else {
        crate::connector::csv::clip(&text, 300)
    }
}

fn retryable_code(body: &[u8], policy: &Policy) -> bool {
    let Some(at) = &policy.error_code_at else {
        return false;
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let code = json.pointer(at).and_then(|v| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    });
    code.is_some_and(|c| policy.retry_error_codes.contains(&c))
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    seconds(value).or_else(|| {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
        Some(wait.to_std().unwrap_or_default())
    })
}

fn seconds(text: &str) -> Option<Duration> {
    let value: f64 = text.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| Duration::from_secs_f64(value))
}

fn poll_wait(headers: &HeaderMap, policy: &Policy) -> Option<Duration> {
    policy
        .poll_header
        .as_ref()
        .and_then(|h| headers.get(h.as_str()))
        .and_then(|v| v.to_str().ok())
        .and_then(seconds)
        .or_else(|| retry_after(headers))
}

/// Exponential backoff with jitter: half to all of `backoff * 2^(n-1)`, capped.
fn backoff(policy: &Policy, failures: u32) -> Duration {
    let full = policy
        .backoff
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(policy.max_backoff);
    full.mul_f64(0.5 + fastrand::f64() * 0.5)
}

async fn wait_for(wait: Duration, cancel: &Cancel) -> Result<(), Failure> {
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(()),
        _ = cancelled(cancel) => Err(Failure::Cancelled),
    }
}

async fn cancelled(cancel: &Cancel) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        let later = chrono::Utc::now() + chrono::Duration::seconds(30);
        headers.insert("retry-after", later.to_rfc2822().parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = Policy {
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            ..Policy::default()
        };
        for _ in 0..20 {
            let first = backoff(&policy, 1);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
            let third = backoff(&policy, 3);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4));
            assert!(backoff(&policy, 30) <= Duration::from_secs(8));
        }
    }

    #[test]
    fn error_codes_in_the_body() {
        let policy = Policy {
            retry_error_codes: vec![9000],
            error_code_at: Some("/error/error_code".into()),
            ..Policy::default()
        };
        assert!(retryable_code(
            br#"{"error": {"error_code": 9000}}"#,
            &policy
        ));
        assert!(retryable_code(
            br#"{"error": {"error_code": "9000"}}"#,
            &policy
        ));
        assert!(!retryable_code(
            br#"{"error": {"error_code": 8000}}"#,
            &policy
        ));
        assert!(!retryable_code(b"not json", &policy));
    }
}
