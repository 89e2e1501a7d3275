//! The settings of the `audit-svc` binary.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use service_kit::config::parse_secret;

use crate::AuditError;
use crate::webhooks::WebhookSettings;

use service_kit::config::{DatabaseArgs, MetricsArgs, SecurityArgs, TelemetryArgs};

/// Settings of `audit-svc`; every flag has an environment twin.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "audit-svc", about = "Audit records, inventory and compliance", version)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "AUDIT_SVC_LISTEN", default_value = "127.0.0.1:50054")]
    pub listen: SocketAddr,
    /// policy-svc gRPC URL: compliance reads the policy catalog and exclusions from it.
    #[arg(long, env = "POLICY_SVC_URL", default_value = "http://127.0.0.1:50051")]
    pub policy_url: String,
    /// Seconds the catalog and exclusions fetched from policy-svc are reused before a refetch.
    #[arg(long, env = "AUDIT_POLICY_CACHE_TTL_SECS", default_value_t = 60)]
    pub policy_cache_ttl_secs: u64,
    /// Where the service keeps its data. On PostgreSQL audit writes run as the
    /// `snapkeeper_audit_writer` role (SELECT and INSERT only) when the user may switch to it.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Service-to-service credential and TLS.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Webhook notifications.
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    /// Prometheus `/metrics` listener.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// How often compliance is judged for the metrics, in seconds.
    #[arg(long, env = "AUDIT_COMPLIANCE_METRICS_INTERVAL_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub compliance_metrics_interval_secs: u64,
}

/// Webhook notifications: where to POST, the signing secret, when compliance alerts, retries.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WebhookArgs {
    /// Comma-separated http(s) URLs that receive every notification (run failed or partial,
    /// compliance below the threshold, quota forecast risk); empty: no webhooks.
    #[arg(long = "webhook-urls", env = "WEBHOOK_URLS", value_delimiter = ',')]
    pub urls: Vec<String>,
    /// Secret the HMAC-SHA256 signature (`X-Snapkeeper-Signature`) is made with; required with
    /// WEBHOOK_URLS.
    #[arg(long = "webhook-secret", env = "WEBHOOK_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: Option<SecretString>,
    /// Compliance ratio (0 to 1, overall or of one policy) below which a webhook is sent, once per
    /// crossing; checked when the daily roll-up is recorded and after inventory syncs.
    #[arg(long, env = "COMPLIANCE_ALERT_THRESHOLD", default_value_t = 0.95, value_parser = parse_ratio)]
    pub compliance_alert_threshold: f64,
    /// Attempts per webhook delivery before it is given up.
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,
    /// Milliseconds before the first retry of a failed delivery; doubles per attempt.
    #[arg(long, env = "WEBHOOK_RETRY_BASE_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_base_ms: u64,
    /// Longest wait between two attempts of a delivery, in seconds.
    #[arg(long, env = "WEBHOOK_RETRY_MAX_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_max_secs: u64,
    /// Time limit of one webhook POST, in seconds.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub webhook_timeout_secs: u64,
    /// How often pending deliveries are looked for, in milliseconds.
    #[arg(long, env = "WEBHOOK_POLL_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub webhook_poll_interval_ms: u64,
}

fn parse_ratio(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("{value:?} is not a ratio from 0 to 1 (e.g. 0.95)")),
    }
}

impl WebhookArgs {
    /// The settings, or `None` when no URL is configured; refuses URLs that are not http(s) and
    /// URLs without a secret.
    pub fn settings(&self) -> Result<Option<WebhookSettings>, AuditError> {
        let urls: Vec<String> =
            self.urls.iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
        if urls.is_empty() {
            return Ok(None);
        }
        for (i, url) in urls.iter().enumerate() {
            let scheme_ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !scheme_ok {
                return Err(AuditError::invalid(format!("WEBHOOK_URLS[{i}]"), "not an http(s) URL"));
            }
        }
        let Some(secret) = self.secret.clone() else {
            return Err(AuditError::invalid("WEBHOOK_SECRET", "required when WEBHOOK_URLS is set"));
        };
        Ok(Some(WebhookSettings {
            urls,
            secret,
            threshold: self.compliance_alert_threshold,
            max_attempts: self.webhook_max_attempts,
            retry_base: Duration::from_millis(self.webhook_retry_base_ms),
            retry_max: Duration::from_secs(self.webhook_retry_max_secs),
            timeout: Duration::from_secs(self.webhook_timeout_secs),
            poll_interval: Duration::from_millis(self.webhook_poll_interval_ms),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn webhook_settings_need_a_secret_and_http_urls_and_never_print_the_secret() {
        let parse = |args: &[&str]| Config::try_parse_from([&["audit-svc"], args].concat());
        assert!(parse(&[]).unwrap().webhooks.settings().unwrap().is_none());
        let no_secret = parse(&["--webhook-urls", "http://a.example/h"]).unwrap();
        let err = no_secret.webhooks.settings().unwrap_err().to_string();
        assert!(err.contains("WEBHOOK_SECRET"), "{err}");
        let bad_url = parse(&["--webhook-urls", "ftp://x", "--webhook-secret", "s3cr3t-value"]).unwrap();
        assert!(bad_url.webhooks.settings().unwrap_err().to_string().contains("WEBHOOK_URLS[0]"));
        assert!(parse(&["--compliance-alert-threshold", "1.5"]).is_err());
        let good = parse(&[
            "--webhook-urls",
            "http://a.example/h,https://b.example/h",
            "--webhook-secret",
            "s3cr3t-value",
            "--compliance-alert-threshold",
            "0.9",
        ])
        .unwrap();
        let settings = good.webhooks.settings().unwrap().unwrap();
        assert_eq!(settings.urls.len(), 2);
        assert!((settings.threshold - 0.9).abs() < f64::EPSILON);
        assert!(!format!("{good:?}").contains("s3cr3t-value"));
        assert!(!format!("{settings:?}").contains("s3cr3t-value"));
    }
}
