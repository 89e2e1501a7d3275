//! Clients of the suite's gRPC services for the CLI subcommands, and how a failed call is reported:
//! the service, its URL, the RPC, the gRPC code and the server's message, plus a hint when the code
//! has a usual cause.

use std::time::Duration;

use anyhow::Context as _;
use service_kit::client::{ServiceChannel, Timeouts, connect_lazy};
use service_kit::config::{SecurityArgs, ServiceUrls};
use snapkeeper_proto::audit::v1::audit_service_client::AuditServiceClient;
use snapkeeper_proto::policy::v1::policy_service_client::PolicyServiceClient;
use snapkeeper_proto::snapshot::v1::snapshot_service_client::SnapshotServiceClient;
use snapkeeper_proto::tonic;

/// Where the services are and how to reach them (the same variables the services use).
#[derive(clap::Args, Debug, Clone)]
pub struct ServiceArgs {
    /// Service URLs.
    #[command(flatten)]
    pub urls: ServiceUrls,
    /// Internal credential and TLS.
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Seconds a call may take before it is abandoned (a watched run's stream is not bounded).
    #[arg(long, env = "SNAPKEEPER_CLI_TIMEOUT_SECS", default_value_t = 60)]
    pub timeout_secs: u64,
}

/// A service being called, named in every error about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Binary name, e.g. `policy-svc`.
    pub service: &'static str,
    /// The URL called.
    pub url: String,
}

/// A generated client together with the service it talks to.
#[derive(Debug, Clone)]
pub struct Remote<C> {
    /// Which service, for error messages.
    pub target: Target,
    /// The tonic client.
    pub client: C,
}

impl ServiceArgs {
    fn channel(&self, service: &'static str, url: &str) -> anyhow::Result<(Target, ServiceChannel)> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(self.timeout_secs.max(1)),
        };
        let channel = connect_lazy(url, &self.security, timeouts)
            .with_context(|| format!("setting up the connection to {service} at {url}"))?;
        Ok((Target { service, url: url.to_owned() }, channel))
    }

    /// policy-svc (`POLICY_SVC_URL`).
    pub fn policy(&self) -> anyhow::Result<Remote<PolicyServiceClient<ServiceChannel>>> {
        let (target, channel) = self.channel("policy-svc", &self.urls.policy_url)?;
        Ok(Remote { target, client: PolicyServiceClient::new(channel) })
    }

    /// snapshot-svc (`SNAPSHOT_SVC_URL`).
    pub fn snapshot(&self) -> anyhow::Result<Remote<SnapshotServiceClient<ServiceChannel>>> {
        let (target, channel) = self.channel("snapshot-svc", &self.urls.snapshot_url)?;
        Ok(Remote { target, client: SnapshotServiceClient::new(channel) })
    }

    /// audit-svc (`AUDIT_SVC_URL`).
    pub fn audit(&self) -> anyhow::Result<Remote<AuditServiceClient<ServiceChannel>>> {
        let (target, channel) = self.channel("audit-svc", &self.urls.audit_url)?;
        Ok(Remote { target, client: AuditServiceClient::new(channel) })
    }
}

impl Target {
    /// The error for `rpc` failing with `status`: service, URL, RPC, code, message and a hint.
    pub fn failed(&self, rpc: &str, status: &tonic::Status) -> anyhow::Error {
        let code = status.code();
        let mut message = status.message().to_owned();
        // Transport failures carry the useful part (e.g. "Connection refused") in the source chain.
        let mut source = std::error::Error::source(status);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message = if message.is_empty() { text } else { format!("{message}: {text}") };
            }
            source = cause.source();
        }
        if message.is_empty() {
            code.description().clone_into(&mut message);
        }
        let hint = match code {
            tonic::Code::Unavailable => {
                format!(" (is {} running and reachable at {}?)", self.service, self.url)
            }
            tonic::Code::Unimplemented => format!(" ({} does not offer {rpc} yet)", self.service),
            tonic::Code::Unauthenticated => {
                " (set SNAPKEEPER_INTERNAL_TOKEN to the suite's internal token)".to_owned()
            }
            tonic::Code::DeadlineExceeded => " (raise --timeout-secs if the service is just slow)".to_owned(),
            _ => String::new(),
        };
        anyhow::anyhow!("{} at {}: {rpc} failed with {code:?}: {message}{hint}", self.service, self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_names_service_url_rpc_and_code() {
        let target = Target { service: "snapshot-svc", url: "http://127.0.0.1:50053".into() };
        let text = target.failed("StartRun", &tonic::Status::unimplemented("")).to_string();
        assert_eq!(
            text,
            "snapshot-svc at http://127.0.0.1:50053: StartRun failed with Unimplemented: \
             Operation is not implemented or not supported (snapshot-svc does not offer StartRun yet)"
        );
        let text =
            target.failed("ListRuns", &tonic::Status::already_exists("run 0193 is active")).to_string();
        assert!(text.ends_with("ListRuns failed with AlreadyExists: run 0193 is active"), "{text}");
    }
}
