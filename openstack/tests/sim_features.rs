//! Client features the real test stack cannot show (no Nova, one region, no domain roles, no
//! application credentials, no list_limit) exercised against the simulator, plus the
//! simulator's own wire behaviour (microversion 406, error bodies, admin endpoints).

use std::collections::BTreeMap;

use openstack::{
    AuthMethod, CloudConfig, DomainRef, Error, OpenStack, ProjectRef, Scope, SecretString, UserRef,
    VolumeQuery,
};
use openstack_sim::{
    AppCredentialSpec, AssignmentSpec, DomainSpec, Faults, GenSpec, OpFaults, ProjectSpec, Scenario,
    ServerSpec, SimConfig, SimHandle, Simulator, UserSpec, VolumeSpec,
};

async fn start(scenario: Scenario) -> SimHandle {
    Simulator::start(SimConfig { scenario, ..SimConfig::default() }).await.expect("sim starts")
}

fn admin_config(sim: &SimHandle) -> CloudConfig {
    CloudConfig::password(
        &sim.auth_url(),
        "admin",
        "Default",
        openstack_sim::ADMIN_PASSWORD,
        "admin",
        "Default",
    )
}

fn user_auth(name: &str, domain: &str, password: &str, scope: Scope) -> AuthMethod {
    AuthMethod::Password {
        user: UserRef::Name { name: name.into(), domain: DomainRef::Name(domain.into()) },
        password: SecretString::from(password.to_owned()),
        scope,
    }
}

fn acme_scenario() -> Scenario {
    let mut s = Scenario::minimal();
    s.regions = vec!["RegionOne".into(), "RegionTwo".into()];
    s.domains.push(DomainSpec { id: None, name: "acme".into() });
    s.projects.push(ProjectSpec {
        name: "web".into(),
        domain: Some("acme".into()),
        ..ProjectSpec::default()
    });
    s.users.push(UserSpec {
        name: "ops".into(),
        domain: Some("acme".into()),
        password: "pw".into(),
        ..UserSpec::default()
    });
    s.assignments.push(AssignmentSpec {
        user: "ops".into(),
        role: "admin".into(),
        domain: Some("acme".into()),
        project: None,
    });
    s.assignments.push(AssignmentSpec {
        user: "ops".into(),
        role: "member".into(),
        project: Some("web".into()),
        domain: None,
    });
    s.application_credentials.push(AppCredentialSpec {
        id: Some("appcred-1".into()),
        name: "ci".into(),
        user: "ops".into(),
        project: "web".into(),
        secret: "s3cret".into(),
    });
    s.servers.push(ServerSpec { id: None, name: "web-vm-1".into(), project: "web".into() });
    s.volumes.push(VolumeSpec {
        project: "web".into(),
        name: "web-data".into(),
        size: Some(3),
        attachments: vec!["web-vm-1".into()],
        ..VolumeSpec::default()
    });
    s
}

#[tokio::test]
async fn domain_scope_app_credentials_and_token_rescoping() {
    let sim = start(acme_scenario()).await;
    let admin = OpenStack::connect(admin_config(&sim)).await.expect("admin");

    let domain_scoped = admin
        .with_auth(user_auth("ops", "acme", "pw", Scope::Domain(DomainRef::Name("acme".into()))))
        .await
        .expect("domain scope");
    let info = domain_scoped.token_info().await.expect("info");
    assert_eq!(info.domain.as_ref().map(|d| d.name.as_str()), Some("acme"));
    assert!(info.project.is_none() && info.has_role("admin"));
    assert!(
        matches!(domain_scoped.cinder().limits().await, Err(Error::NoEndpoint { .. })),
        "no project, no Cinder URL"
    );

    let app = admin
        .with_auth(AuthMethod::ApplicationCredential {
            id: Some("appcred-1".into()),
            name: None,
            user: None,
            secret: SecretString::from("s3cret".to_owned()),
        })
        .await
        .expect("application credential");
    assert_eq!(app.token_info().await.expect("info").project.map(|p| p.name).as_deref(), Some("web"));
    assert_eq!(app.cinder().volumes(&VolumeQuery::default()).await.expect("volumes").len(), 1);
    let wrong = admin
        .with_auth(AuthMethod::ApplicationCredential {
            id: Some("appcred-1".into()),
            name: None,
            user: None,
            secret: SecretString::from("x".to_owned()),
        })
        .await;
    assert!(matches!(wrong, Err(Error::Unauthorized(_))));

    let token = admin.token().await.expect("admin token");
    let rescoped = admin
        .with_auth(AuthMethod::Token {
            token,
            scope: Scope::Project(ProjectRef::Name {
                name: "service".into(),
                domain: DomainRef::Id("default".into()),
            }),
        })
        .await;
    // admin holds no role on `service`, so Keystone refuses the rescope.
    assert!(matches!(rescoped, Err(Error::Unauthorized(_))), "{rescoped:?}");
    let token = admin.token().await.expect("admin token");
    let same = admin
        .with_auth(AuthMethod::Token {
            token,
            scope: Scope::Project(ProjectRef::Name {
                name: "admin".into(),
                domain: DomainRef::Name("Default".into()),
            }),
        })
        .await
        .expect("token method");
    assert!(same.token_info().await.expect("info").has_role("admin"));
}

#[tokio::test]
async fn catalog_lookup_follows_the_configured_region() {
    let sim = start(acme_scenario()).await;
    let mut config = admin_config(&sim);
    config.region = Some("RegionTwo".into());
    let client = OpenStack::connect(config.clone()).await.expect("connect");
    assert!(client.cinder().limits().await.is_ok());
    config.region = Some("RegionThree".into());
    let elsewhere = OpenStack::connect(config).await.expect("keystone does not depend on the region");
    let err = elsewhere.cinder().limits().await.expect_err("no endpoint in RegionThree");
    assert!(matches!(err, Error::NoEndpoint { ref region, .. } if region == "RegionThree"), "{err}");
}

#[tokio::test]
async fn nova_servers_when_compute_exists() {
    let sim = start(Scenario::demo_with_password("pw")).await;
    let mut config = admin_config(&sim);
    config.auth = user_auth(
        "demo-admin",
        "Default",
        "pw",
        Scope::Project(ProjectRef::Name { name: "admin".into(), domain: DomainRef::Id("default".into()) }),
    );
    let admin = OpenStack::connect(config).await.expect("demo-admin");
    assert!(admin.has_compute().await.expect("catalog"));
    let servers =
        admin.with_page_limit(7).nova().servers(true).await.expect("servers").expect("compute exists");
    let volumes = admin
        .cinder()
        .volumes(&VolumeQuery { all_tenants: true, ..VolumeQuery::default() })
        .await
        .expect("volumes");
    assert_eq!(volumes.len(), 200);
    let names: BTreeMap<&str, &str> = servers.iter().map(|s| (s.id.as_str(), s.name.as_str())).collect();
    assert_eq!(names.len(), servers.len(), "no duplicates across pages");
    let attached = volumes
        .iter()
        .filter_map(|v| v.attachments.first())
        .filter_map(|a| a.server_id.as_deref())
        .collect::<Vec<_>>();
    assert!(!attached.is_empty());
    assert!(attached.iter().all(|id| names.contains_key(id)), "every attachment names a server");
    let own = admin.nova().servers(false).await.expect("own").expect("compute");
    assert!(own.is_empty(), "admin's own project has no servers");

    let reader = admin
        .with_auth(user_auth(
            "demo-reader",
            "acme",
            "pw",
            Scope::Project(ProjectRef::Name { name: "web".into(), domain: DomainRef::Name("acme".into()) }),
        ))
        .await
        .expect("demo-reader");
    let info = reader.token_info().await.expect("info");
    assert!(info.has_role("reader") && !info.has_role("member"));
    let quota = admin.cinder().quota_set(&find_project(&admin, "finance").await, true).await.expect("quota");
    assert_eq!(quota.get("snapshots").map(|q| q.limit), Some(3), "finance has the tight snapshot quota");
}

async fn find_project(client: &OpenStack, name: &str) -> String {
    client
        .keystone()
        .projects(None)
        .await
        .expect("projects")
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.id)
        .expect("project")
}

#[tokio::test]
async fn truncated_keystone_lists_are_completed_per_domain_or_refused() {
    let scenario = Scenario::generate(&GenSpec {
        projects: 12,
        volumes_per_project: 0,
        snapshots: 0,
        domains: 3,
        seed: 1,
    });
    let sim = Simulator::start(SimConfig { scenario, keystone_list_limit: Some(5), ..SimConfig::default() })
        .await
        .expect("sim");
    let client = OpenStack::connect(admin_config(&sim)).await.expect("connect");
    let projects = client.keystone().projects(None).await.expect("completed per domain");
    assert_eq!(projects.len(), 14, "12 generated + admin + service");

    let scenario = Scenario::generate(&GenSpec {
        projects: 12,
        volumes_per_project: 0,
        snapshots: 0,
        domains: 1,
        seed: 1,
    });
    let sim = Simulator::start(SimConfig { scenario, keystone_list_limit: Some(5), ..SimConfig::default() })
        .await
        .expect("sim");
    let client = OpenStack::connect(admin_config(&sim)).await.expect("connect");
    let err = client.keystone().projects(None).await.expect_err("one domain holds more than list_limit");
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
}

#[tokio::test]
async fn simulator_wire_behaviour() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = start(acme_scenario()).await;
    let http = reqwest::Client::new();
    let admin = OpenStack::connect(admin_config(&sim)).await.expect("admin");
    let project = admin.token_info().await.expect("info").project.expect("scoped").id;
    let token = admin.token().await.expect("token");
    use openstack::ExposeSecret;
    let url = format!("{}/volume/v3/{project}/volumes/detail", sim.base_url());

    let response = http
        .get(&url)
        .header("X-Auth-Token", token.expose_secret())
        .header("OpenStack-API-Version", "volume 3.999")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 406);
    assert_eq!(response.headers()["openstack-api-version"], "volume 3.999");
    assert!(response.headers()["x-openstack-request-id"].to_str().expect("ascii").starts_with("req-"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(body["computeFault"]["message"].as_str().expect("message").contains("maximum is 3.71"));

    let response = http.get(&url).header("X-Auth-Token", "nope").send().await.expect("send");
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], 401);

    let other = format!("{}/volume/v3/someone-else/volumes/detail", sim.base_url());
    let response = http.get(&other).header("X-Auth-Token", token.expose_secret()).send().await.expect("send");
    assert_eq!(response.status(), 400, "URL project must match the token's, as in Cinder");

    let stats: serde_json::Value = http
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["operations"]["cinder.volumes.list"], 3);
    let faults = Faults { default: OpFaults { error_rate: 1.0, ..OpFaults::default() }, ..Faults::default() };
    let put =
        http.put(format!("{}/_sim/faults", sim.base_url())).json(&faults).send().await.expect("put faults");
    assert_eq!(put.status(), 200);
    let response = http.get(&url).header("X-Auth-Token", token.expose_secret()).send().await.expect("send");
    assert_eq!(response.status(), 503);
    let reset = http.post(format!("{}/_sim/stats/reset", sim.base_url())).send().await.expect("reset");
    assert_eq!(reset.status(), 204);
    assert!(sim.stats().is_empty());
    sim.set_faults(Faults::default());
    assert_eq!(admin.cinder().volumes(&VolumeQuery::default()).await.expect("faults cleared").len(), 0);
}
