//! Snapkeeper's v1 gRPC contracts as Rust code.
//!
//! This crate owns the `.proto` files under `proto/snapkeeper/<svc>/v1/` and nothing else: the
//! build script compiles them with protox (no `protoc`) into prost messages plus tonic clients and
//! servers, one module per proto package (`policy::v1`, `identity::v1`, `snapshot::v1`,
//! `audit::v1`). Server traits have default methods answering `Unimplemented`.
//! [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set (with comments) that servers register for
//! reflection, so `grpcurl describe` shows the API reference.
//! `tonic`, `prost` and `prost_types` are re-exported so callers need not pin them separately.

pub use prost;
pub use prost_types;
pub use tonic;

/// Policy service (`snapkeeper.policy.v1`): rules, policy catalog, policy sets, assignments,
/// exclusions, evaluation and volume metadata tagging.
pub mod policy {
    /// Version 1 of the policy service contract (generated).
    pub mod v1 {
        #![allow(
            missing_docs,
            unreachable_pub,
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            clippy::clone_on_ref_ptr,
            clippy::unwrap_used,
            rustdoc::all
        )]
        tonic::include_proto!("snapkeeper.policy.v1");
    }
}

/// Identity service (`snapkeeper.identity.v1`): service-user credentials per project, the admin
/// session, and user token validation.
pub mod identity {
    /// Version 1 of the identity service contract (generated).
    pub mod v1 {
        #![allow(
            missing_docs,
            unreachable_pub,
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            clippy::clone_on_ref_ptr,
            clippy::unwrap_used,
            rustdoc::all
        )]
        tonic::include_proto!("snapkeeper.identity.v1");
    }
}

/// Snapshot service (`snapkeeper.snapshot.v1`): runs, scheduling, progress and quota forecasts.
pub mod snapshot {
    /// Version 1 of the snapshot service contract (generated).
    pub mod v1 {
        #![allow(
            missing_docs,
            unreachable_pub,
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            clippy::clone_on_ref_ptr,
            clippy::unwrap_used,
            rustdoc::all
        )]
        tonic::include_proto!("snapkeeper.snapshot.v1");
    }
}

/// Audit service (`snapkeeper.audit.v1`): append-only records, inventory, compliance, orphans.
pub mod audit {
    /// Version 1 of the audit service contract (generated).
    pub mod v1 {
        #![allow(
            missing_docs,
            unreachable_pub,
            clippy::all,
            clippy::pedantic,
            clippy::nursery,
            clippy::clone_on_ref_ptr,
            clippy::unwrap_used,
            rustdoc::all
        )]
        tonic::include_proto!("snapkeeper.audit.v1");
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of all four packages and their imports, with source
/// comments; register it with `tonic_reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use prost::Message;
    use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};

    use super::FILE_DESCRIPTOR_SET;

    /// Field numbers inside descriptor.proto, used to build `SourceCodeInfo` paths.
    const FILE_MESSAGE_TYPE: i32 = 4;
    const FILE_ENUM_TYPE: i32 = 5;
    const FILE_SERVICE: i32 = 6;
    const MESSAGE_FIELD: i32 = 2;
    const MESSAGE_NESTED_TYPE: i32 = 3;
    const MESSAGE_ENUM_TYPE: i32 = 4;
    const MESSAGE_ONEOF_DECL: i32 = 8;
    const ENUM_VALUE: i32 = 2;
    const SERVICE_METHOD: i32 = 2;

    /// Every RPC of every service; a rename or removal is a contract change and must fail here.
    const EXPECTED_METHODS: &[(&str, &[&str])] = &[
        (
            "snapkeeper.policy.v1.PolicyService",
            &[
                "GetRules",
                "ValidateRules",
                "ReplaceRules",
                "ListRuleSetVersions",
                "ListPolicies",
                "GetPolicy",
                "UpsertPolicy",
                "DeletePolicy",
                "NextSlots",
                "ListPolicySets",
                "GetPolicySet",
                "CreatePolicySet",
                "UpdatePolicySet",
                "DeletePolicySet",
                "ListAssignments",
                "GetAssignment",
                "CreateAssignment",
                "UpdateAssignment",
                "DeleteAssignment",
                "ListExclusions",
                "GetExclusion",
                "CreateExclusion",
                "UpdateExclusion",
                "DeleteExclusion",
                "Evaluate",
                "EvaluateVolumes",
                "PlanAssignment",
                "ApplyAssignment",
            ],
        ),
        (
            "snapkeeper.identity.v1.IdentityService",
            &[
                "GetProjectCredentials",
                "GetAdminCredentials",
                "ValidateUserToken",
                "AuthenticateUser",
                "RevokeGrants",
                "Status",
            ],
        ),
        (
            "snapkeeper.snapshot.v1.SnapshotService",
            &[
                "StartRun",
                "GetRun",
                "ListRuns",
                "CancelRun",
                "WatchRun",
                "GetActiveRun",
                "GetSchedule",
                "ForecastQuota",
            ],
        ),
        (
            "snapkeeper.audit.v1.AuditService",
            &[
                "AppendEvents",
                "ListRuns",
                "ListRecords",
                "ExportRecords",
                "GetCompliance",
                "ComplianceTrend",
                "RecordComplianceSnapshot",
                "SyncInventory",
                "ListQuotaBlocks",
                "ListOrphans",
            ],
        ),
    ];

    fn descriptor_set() -> FileDescriptorSet {
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
    }

    /// Our files only (the set also holds the google/protobuf imports).
    fn our_files(set: &FileDescriptorSet) -> Vec<&FileDescriptorProto> {
        set.file.iter().filter(|file| file.package().starts_with("snapkeeper.")).collect()
    }

    #[test]
    fn every_service_and_method_exists() {
        let set = descriptor_set();
        let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in our_files(&set) {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                let methods = service.method.iter().map(|m| m.name().to_owned()).collect();
                found.insert(name, methods);
            }
        }
        let expected: BTreeMap<String, BTreeSet<String>> = EXPECTED_METHODS
            .iter()
            .map(|(service, methods)| {
                let methods = methods.iter().map(|m| (*m).to_owned()).collect();
                ((*service).to_owned(), methods)
            })
            .collect();
        assert_eq!(found, expected, "services and methods differ from the contract");
    }

    #[test]
    fn streaming_shape_of_long_operations() {
        let set = descriptor_set();
        let mut shapes = BTreeMap::new();
        for file in our_files(&set) {
            for service in &file.service {
                for method in &service.method {
                    shapes.insert(
                        format!("{}/{}", service.name(), method.name()),
                        (method.client_streaming(), method.server_streaming()),
                    );
                }
            }
        }
        for (method, shape) in [
            ("PolicyService/PlanAssignment", (false, true)),
            ("PolicyService/ApplyAssignment", (false, true)),
            ("SnapshotService/WatchRun", (false, true)),
            ("AuditService/ExportRecords", (false, true)),
            ("AuditService/SyncInventory", (true, false)),
            ("SnapshotService/StartRun", (false, false)),
        ] {
            assert_eq!(shapes.get(method), Some(&shape), "{method}");
        }
    }

    /// Collects every documentable element of one message (recursively) as (path, display name).
    fn message_elements(
        message: &DescriptorProto,
        path: &[i32],
        scope: &str,
        out: &mut Vec<(Vec<i32>, String)>,
    ) {
        let name = format!("{scope}.{}", message.name());
        out.push((path.to_vec(), format!("message {name}")));
        for (i, field) in message.field.iter().enumerate() {
            let field_path = [path, &[MESSAGE_FIELD, index(i)]].concat();
            out.push((field_path, format!("field {name}.{}", field.name())));
        }
        for (i, oneof) in message.oneof_decl.iter().enumerate() {
            // proto3 `optional` fields are synthetic oneofs named `_<field>`: nothing to document.
            let synthetic = message
                .field
                .iter()
                .any(|field| field.proto3_optional() && field.oneof_index == Some(index(i)));
            if !synthetic {
                let oneof_path = [path, &[MESSAGE_ONEOF_DECL, index(i)]].concat();
                out.push((oneof_path, format!("oneof {name}.{}", oneof.name())));
            }
        }
        for (i, nested) in message.nested_type.iter().enumerate() {
            if nested.options.as_ref().is_some_and(prost_types::MessageOptions::map_entry) {
                continue;
            }
            let nested_path = [path, &[MESSAGE_NESTED_TYPE, index(i)]].concat();
            message_elements(nested, &nested_path, &name, out);
        }
        for (i, nested_enum) in message.enum_type.iter().enumerate() {
            let enum_path = [path, &[MESSAGE_ENUM_TYPE, index(i)]].concat();
            let enum_name = format!("{name}.{}", nested_enum.name());
            out.push((enum_path.clone(), format!("enum {enum_name}")));
            for (j, value) in nested_enum.value.iter().enumerate() {
                let value_path = [&enum_path[..], &[ENUM_VALUE, index(j)]].concat();
                out.push((value_path, format!("value {enum_name}.{}", value.name())));
            }
        }
    }

    fn index(i: usize) -> i32 {
        i32::try_from(i).expect("descriptor index fits in i32")
    }

    /// Every service, method, message, field, oneof, enum and enum value of ours.
    fn documentable_elements(file: &FileDescriptorProto) -> Vec<(Vec<i32>, String)> {
        let mut out = Vec::new();
        let package = file.package();
        for (i, message) in file.message_type.iter().enumerate() {
            message_elements(message, &[FILE_MESSAGE_TYPE, index(i)], package, &mut out);
        }
        for (i, top_enum) in file.enum_type.iter().enumerate() {
            let enum_name = format!("{package}.{}", top_enum.name());
            out.push((vec![FILE_ENUM_TYPE, index(i)], format!("enum {enum_name}")));
            for (j, value) in top_enum.value.iter().enumerate() {
                let path = vec![FILE_ENUM_TYPE, index(i), ENUM_VALUE, index(j)];
                out.push((path, format!("value {enum_name}.{}", value.name())));
            }
        }
        for (i, service) in file.service.iter().enumerate() {
            let service_name = format!("{package}.{}", service.name());
            out.push((vec![FILE_SERVICE, index(i)], format!("service {service_name}")));
            for (j, method) in service.method.iter().enumerate() {
                let path = vec![FILE_SERVICE, index(i), SERVICE_METHOD, index(j)];
                out.push((path, format!("rpc {service_name}.{}", method.name())));
            }
        }
        out
    }

    #[test]
    fn every_element_has_a_doc_comment() {
        let set = descriptor_set();
        let files = our_files(&set);
        assert!(files.len() >= 4, "expected our four packages, found {}", files.len());
        let mut undocumented = Vec::new();
        let mut checked = 0_usize;
        for file in files {
            let info = file
                .source_code_info
                .as_ref()
                .unwrap_or_else(|| panic!("{} has no source_code_info", file.name()));
            let documented: BTreeSet<&[i32]> = info
                .location
                .iter()
                .filter(|loc| loc.leading_comments().trim().len() > 1)
                .map(|loc| loc.path.as_slice())
                .collect();
            for (path, what) in documentable_elements(file) {
                checked += 1;
                if !documented.contains(path.as_slice()) {
                    undocumented.push(format!("{}: {what}", file.name()));
                }
            }
        }
        assert!(checked > 500, "suspiciously few elements checked: {checked}");
        assert!(
            undocumented.is_empty(),
            "elements without a leading `//` comment:\n{}",
            undocumented.join("\n")
        );
    }

    #[test]
    fn enums_follow_buf_style() {
        let set = descriptor_set();
        for file in our_files(&set) {
            let mut enums: Vec<_> = file.enum_type.iter().collect();
            for message in &file.message_type {
                enums.extend(message.enum_type.iter());
            }
            for enumeration in enums {
                let prefix = screaming_snake(enumeration.name());
                let first = enumeration.value.first().expect("enum has values");
                assert_eq!(first.number(), 0, "{}", enumeration.name());
                assert_eq!(first.name(), format!("{prefix}_UNSPECIFIED"));
                for value in &enumeration.value {
                    assert!(
                        value.name().starts_with(&format!("{prefix}_")),
                        "{} lacks prefix {prefix}_",
                        value.name()
                    );
                }
            }
        }
    }

    fn screaming_snake(camel: &str) -> String {
        let mut out = String::new();
        for (i, ch) in camel.chars().enumerate() {
            if ch.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_uppercase());
        }
        out
    }

    #[test]
    fn list_rpcs_page() {
        let set = descriptor_set();
        let mut messages: BTreeMap<String, &DescriptorProto> = BTreeMap::new();
        for file in our_files(&set) {
            for message in &file.message_type {
                messages.insert(format!(".{}.{}", file.package(), message.name()), message);
            }
        }
        let has_field = |message: &str, field: &str| {
            messages.get(message).is_some_and(|m| m.field.iter().any(|f| f.name() == field))
        };
        for file in our_files(&set) {
            for service in &file.service {
                for method in service.method.iter().filter(|m| m.name().starts_with("List")) {
                    let (input, output) = (method.input_type(), method.output_type());
                    assert!(has_field(input, "page_size"), "{input} lacks page_size");
                    assert!(has_field(input, "page_token"), "{input} lacks page_token");
                    assert!(has_field(output, "next_page_token"), "{output} lacks next_page_token");
                }
            }
        }
    }
}
