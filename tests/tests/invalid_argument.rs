//! Every RPC of the four services, enumerated from the proto descriptor set (so a new RPC is
//! covered the day it is added), against the real services on real gRPC: an empty request, each
//! field (nested ones too) oversized, each field invalid (negative or huge numbers, unknown enum
//! values, control characters), and a request above the gRPC message limit. No answer is a server
//! fault (Internal, Unknown, Unimplemented, DataLoss); an InvalidArgument names the field; an
//! oversized field is refused as InvalidArgument naming it; the message limit answers
//! OutOfRange/ResourceExhausted; and every service is still serving afterwards.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use clap::Parser;
use openstack::CloudConfig;
use openstack_sim::{AssignmentSpec, Scenario, SimConfig, SimHandle, Simulator, UserSpec, VolumeSpec};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use service_kit::config::{DatabaseArgs, SecurityArgs, ServiceUrls};
use snapkeeper_proto::FILE_DESCRIPTOR_SET;
use snapkeeper_proto::prost::Message as _;
use snapkeeper_proto::prost::bytes::{Buf, BufMut};
use tokio::sync::watch;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

const PASSWORD: &str = "table-test-pass";
/// Larger than any text field may be (the biggest, a rules document, stops at 1 MiB).
const OVERSIZED: usize = 1024 * 1024 + 16;
/// Larger than the 4 MiB gRPC message limit every service keeps.
const OVER_MESSAGE_LIMIT: usize = 5 * 1024 * 1024;

/// Passes encoded protobuf through unchanged, so any RPC can be called with hand-made bytes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// One RPC as the descriptor describes it.
#[derive(Debug, Clone)]
struct Rpc {
    service: String,
    path: String,
    input: String,
}

/// Message full name (`.pkg.Message`) -> descriptor, nested messages included.
fn messages(set: &FileDescriptorSet) -> BTreeMap<String, DescriptorProto> {
    fn add(prefix: &str, message: &DescriptorProto, into: &mut BTreeMap<String, DescriptorProto>) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.nested_type {
            add(&name, nested, into);
        }
        into.insert(name, message.clone());
    }
    let mut all = BTreeMap::new();
    for file in &set.file {
        for message in &file.message_type {
            add(&format!(".{}", file.package()), message, &mut all);
        }
    }
    all
}

fn rpcs(set: &FileDescriptorSet) -> Vec<Rpc> {
    let mut found = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let service_name = format!("{}.{}", file.package(), service.name());
            for method in &service.method {
                found.push(Rpc {
                    service: service_name.clone(),
                    path: format!("/{service_name}/{}", method.name()),
                    input: method.input_type().to_owned(),
                });
            }
        }
    }
    found
}

/// A value to put in one leaf field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    Oversized,
    Negative,
    Huge,
    Control,
}

/// A request with one leaf field set: the dotted path, the value's kind and the encoding.
struct Case {
    field: String,
    bad: Bad,
    bytes: Vec<u8>,
}

fn key(number: i32, wire: u8, out: &mut Vec<u8>) {
    varint((u64::from(number as u32) << 3) | u64::from(wire), out);
}

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn length_delimited(number: i32, content: &[u8], out: &mut Vec<u8>) {
    key(number, 2, out);
    varint(content.len() as u64, out);
    out.extend_from_slice(content);
}

/// The encoded leaf `field` holding `bad`, or `None` when that kind of value does not apply.
fn leaf(field: &prost_types::FieldDescriptorProto, bad: Bad) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let number = field.number();
    match (field.r#type(), bad) {
        (Type::String | Type::Bytes, Bad::Oversized) => {
            length_delimited(number, "x".repeat(OVERSIZED).as_bytes(), &mut out);
        }
        (Type::String | Type::Bytes, Bad::Control) => {
            length_delimited(number, b"\0\x1b[31m\n\r\t;DROP--", &mut out);
        }
        (
            Type::Int32 | Type::Int64 | Type::Enum | Type::Sint32 | Type::Sint64 | Type::Sfixed64,
            Bad::Negative,
        ) => {
            key(number, 0, &mut out);
            varint(u64::MAX, &mut out);
        }
        (Type::Int32 | Type::Enum | Type::Uint32, Bad::Huge) => {
            key(number, 0, &mut out);
            varint(u64::from(i32::MAX as u32), &mut out);
        }
        (Type::Int64 | Type::Uint64, Bad::Huge) => {
            key(number, 0, &mut out);
            varint(i64::MAX as u64, &mut out);
        }
        (Type::Double, Bad::Huge) => {
            key(number, 1, &mut out);
            out.extend_from_slice(&f64::NAN.to_le_bytes());
        }
        (Type::Double, Bad::Negative) => {
            key(number, 1, &mut out);
            out.extend_from_slice(&(-1e300f64).to_le_bytes());
        }
        _ => return None,
    }
    Some(out)
}

/// Every single-leaf bad request of `message`, nesting into message fields up to `depth`.
fn cases(message: &str, all: &BTreeMap<String, DescriptorProto>, depth: usize) -> Vec<Case> {
    let mut found = Vec::new();
    let Some(descriptor) = all.get(message) else { return found };
    for field in &descriptor.field {
        if field.r#type() == Type::Message {
            if depth == 0 {
                continue;
            }
            let map_entry = all
                .get(field.type_name())
                .and_then(|m| m.options.as_ref())
                .is_some_and(prost_types::MessageOptions::map_entry);
            for inner in cases(field.type_name(), all, depth - 1) {
                let mut bytes = Vec::new();
                length_delimited(field.number(), &inner.bytes, &mut bytes);
                let separator = if field.label() == Label::Repeated && !map_entry { "[0]." } else { "." };
                found.push(Case {
                    field: format!("{}{separator}{}", field.name(), inner.field),
                    bad: inner.bad,
                    bytes,
                });
            }
            continue;
        }
        for bad in [Bad::Oversized, Bad::Negative, Bad::Huge, Bad::Control] {
            if let Some(bytes) = leaf(field, bad) {
                found.push(Case { field: field.name().to_owned(), bad, bytes });
            }
        }
    }
    found
}

/// Calls `path` with `bytes` (as a one-message stream, which serves every RPC shape) and returns
/// the status: the call's, or the first streamed message's, or Ok when a stream stays open.
async fn call(channel: &Channel, path: &str, bytes: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone()).max_encoding_message_size(64 << 20);
    grpc.ready().await.unwrap();
    let request = tonic::Request::new(futures::stream::once(async move { bytes }));
    let answer = async {
        match grpc.streaming(request, path.parse().unwrap(), RawCodec).await {
            Err(status) => status,
            Ok(response) => {
                let mut stream = response.into_inner();
                match stream.message().await {
                    Ok(_) => Status::ok(""),
                    Err(status) => status,
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), answer).await.unwrap_or_else(|_| Status::ok("stream open"))
}

/// Names of every field of `message` and of its message fields, `depth` levels down.
fn field_names_of(
    message: &str,
    all: &BTreeMap<String, DescriptorProto>,
    depth: usize,
    into: &mut Vec<String>,
) {
    let Some(descriptor) = all.get(message) else { return };
    for field in &descriptor.field {
        into.push(field.name().to_owned());
        if field.r#type() == Type::Message && depth > 0 {
            field_names_of(field.type_name(), all, depth - 1, into);
        }
    }
}

fn names_field(status: &Status, field: &str) -> bool {
    let named = status.metadata().get(service_kit::error::FIELD_METADATA_KEY).and_then(|v| v.to_str().ok());
    status.message().contains(field) || named.is_some_and(|named| named.contains(field))
}

fn server_fault(code: Code) -> bool {
    matches!(code, Code::Internal | Code::Unknown | Code::Unimplemented | Code::DataLoss)
}

fn scenario() -> Scenario {
    let mut scenario = Scenario::minimal();
    for name in ["alice", "snapkeeper-svc"] {
        scenario.users.push(UserSpec {
            name: name.to_owned(),
            password: PASSWORD.to_owned(),
            ..UserSpec::default()
        });
    }
    scenario.assignments.push(AssignmentSpec {
        user: "snapkeeper-svc".to_owned(),
        role: "member".to_owned(),
        project: Some("service".to_owned()),
        domain: None,
    });
    scenario.volumes.push(VolumeSpec {
        project: "service".to_owned(),
        name: "data".to_owned(),
        ..VolumeSpec::default()
    });
    scenario
}

fn spawn<E: std::fmt::Display>(
    name: &'static str,
    service: impl Future<Output = Result<(), E>> + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(error) = service.await {
            panic!("{name} stopped: {error}");
        }
    });
}

/// Starts the simulator and the four services; returns a channel per service name.
async fn start_suite(
    dir: &std::path::Path,
    stop: &watch::Sender<bool>,
) -> (BTreeMap<String, Channel>, SimHandle) {
    let sim = Simulator::start(SimConfig { scenario: scenario(), ..SimConfig::default() }).await.unwrap();
    let auth_url = sim.auth_url();
    let shutdown = || {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    };
    let mut listeners = BTreeMap::new();
    let mut urls = BTreeMap::new();
    for name in ["policy", "identity", "snapshot", "audit"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.insert(name, format!("http://{}", listener.local_addr().unwrap()));
        listeners.insert(name, listener);
    }
    let database = DatabaseArgs { database_url: None, data_dir: dir.to_path_buf(), max_connections: 4 };
    let services = ServiceUrls {
        policy_url: urls["policy"].clone(),
        identity_url: urls["identity"].clone(),
        snapshot_url: urls["snapshot"].clone(),
        audit_url: urls["audit"].clone(),
    };

    let mut config = identity_svc::Config::try_parse_from(["identity-svc"]).unwrap();
    config.database = database.clone();
    config.security = SecurityArgs::default();
    config.cloud =
        Some(CloudConfig::password(&auth_url, "admin", "Default", "adminpass", "admin", "Default"));
    config.service_user.email = Some("snapkeeper-svc".to_owned());
    config.service_user.password = Some(PASSWORD.to_owned().into());
    spawn("identity-svc", identity_svc::serve(config, listeners.remove("identity").unwrap(), shutdown()));

    let mut config = policy_svc::Config::try_parse_from(["policy-svc"]).unwrap();
    config.identity_url.clone_from(&urls["identity"]);
    config.rules_file = None;
    config.database = database.clone();
    config.security = SecurityArgs::default();
    spawn("policy-svc", policy_svc::serve(config, listeners.remove("policy").unwrap(), shutdown()));

    let mut config = snapshot_svc::Config::try_parse_from(["snapshot-svc"]).unwrap();
    config.services = services;
    config.database = database.clone();
    config.security = SecurityArgs::default();
    config.scheduler_enabled = false;
    spawn("snapshot-svc", snapshot_svc::serve(config, listeners.remove("snapshot").unwrap(), shutdown()));

    let mut config = audit_svc::Config::try_parse_from(["audit-svc"]).unwrap();
    config.policy_url.clone_from(&urls["policy"]);
    config.database = database;
    config.security = SecurityArgs::default();
    spawn("audit-svc", audit_svc::serve(config, listeners.remove("audit").unwrap(), shutdown()));

    let mut channels = BTreeMap::new();
    for (name, url) in urls {
        let channel = Channel::from_shared(url).unwrap().connect_lazy();
        channels.insert(format!("snapkeeper.{name}.v1"), channel);
    }
    (channels, sim)
}

async fn wait_serving(channels: &BTreeMap<String, Channel>, services: &[String]) {
    for service in services {
        let package = service.rsplit_once('.').unwrap().0;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channels[package].clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let request = tonic_health::pb::HealthCheckRequest { service: service.clone() };
            if let Ok(answer) = health.check(request).await
                && answer.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{service} is not serving");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_empty_oversized_and_invalid_fields_with_the_proper_status() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let all = messages(&set);
    let rpcs = rpcs(&set);
    let mut services: Vec<String> = rpcs.iter().map(|rpc| rpc.service.clone()).collect();
    services.dedup();
    assert_eq!(services.len(), 4, "four services in the descriptor set: {services:?}");

    let dir = tempfile::tempdir().unwrap();
    let (stop, _) = watch::channel(false);
    let (channels, sim) = start_suite(dir.path(), &stop).await;
    wait_serving(&channels, &services).await;

    let mut failures = Vec::new();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut oversized_refused = 0;
    let mut calls = 0;
    for rpc in &rpcs {
        let channel = &channels[rpc.service.rsplit_once('.').unwrap().0];
        // A request may be refused for a required field other than the one set, so an
        // InvalidArgument has to name some field of the request, nested ones included.
        let mut field_names = Vec::new();
        field_names_of(&rpc.input, &all, 3, &mut field_names);

        let status = call(channel, &rpc.path, Vec::new()).await;
        calls += 1;
        *tally.entry(format!("empty {:?}", status.code())).or_default() += 1;
        if server_fault(status.code()) {
            failures.push(format!("{} empty: {:?} {}", rpc.path, status.code(), status.message()));
        } else if status.code() == Code::InvalidArgument
            && !field_names.iter().any(|f| names_field(&status, f))
        {
            failures.push(format!(
                "{} empty: InvalidArgument names no field: {}",
                rpc.path,
                status.message()
            ));
        }

        let mut over_limit = Vec::new();
        length_delimited(100_000, &vec![b'x'; OVER_MESSAGE_LIMIT], &mut over_limit);
        let status = call(channel, &rpc.path, over_limit).await;
        calls += 1;
        *tally.entry(format!("over message limit {:?}", status.code())).or_default() += 1;
        if !matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted) {
            failures.push(format!(
                "{} over the message limit: {:?} {}",
                rpc.path,
                status.code(),
                status.message()
            ));
        }

        for case in cases(&rpc.input, &all, 3) {
            let status = call(channel, &rpc.path, case.bytes).await;
            calls += 1;
            *tally.entry(format!("{:?} {:?}", case.bad, status.code())).or_default() += 1;
            let what = format!("{} {} {:?}", rpc.path, case.field, case.bad);
            if server_fault(status.code()) || status.message().contains("h2 protocol error") {
                failures.push(format!("{what}: {:?} {}", status.code(), status.message()));
            } else if status.code() == Code::InvalidArgument
                && !field_names.iter().any(|f| names_field(&status, f))
            {
                failures.push(format!("{what}: InvalidArgument names no field: {}", status.message()));
            } else if case.bad == Bad::Oversized {
                // Reads included: a filter no stored value could equal is a caller's mistake,
                // not a question whose answer is "nothing".
                if status.code() == Code::InvalidArgument {
                    oversized_refused += 1;
                } else {
                    failures.push(format!(
                        "{what}: a value of {OVERSIZED} bytes answered {:?} {}",
                        status.code(),
                        status.message()
                    ));
                }
            }
        }
    }
    wait_serving(&channels, &services).await;
    let _ = stop.send(true);
    sim.shutdown().await;
    eprintln!("{} RPCs of {} services, {calls} calls; statuses: {tally:#?}", rpcs.len(), services.len());
    eprintln!("oversized values refused as InvalidArgument: {oversized_refused}");
    assert!(rpcs.len() >= 52, "every RPC is in the table: {}", rpcs.len());
    assert!(
        failures.is_empty(),
        "{} of {calls} calls answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
