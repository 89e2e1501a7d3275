//! Test support shared by the suite's crates (feature `testing`): throwaway PostgreSQL databases,
//! an in-memory span capture for trace assertions, and a time-budgeted property-test loop.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use sqlx::{AssertSqlSafe, Connection, Executor};
use tracing_subscriber::layer::SubscriberExt;

/// Where the test PostgreSQL server is (`SNAPKEEPER_TEST_POSTGRES_URL`), as an admin URL.
pub fn postgres_admin_url() -> String {
    std::env::var("SNAPKEEPER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Runs `test` over `strategy` for proptest's configured cases (`PROPTEST_CASES`, default 256), or,
/// when `SNAPKEEPER_FUZZ_SECONDS` is set, in fresh batches until that much time has passed; prints
/// and returns the number of cases run. Panics with proptest's minimal failing case.
pub fn fuzz<S>(
    name: &str,
    strategy: &S,
    test: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) -> u64
where
    S: proptest::strategy::Strategy,
    S::Value: std::fmt::Debug,
{
    use proptest::test_runner::{Config, TestRunner};
    let budget = std::env::var("SNAPKEEPER_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(std::time::Duration::from_secs);
    let config = Config { failure_persistence: None, ..Config::default() };
    let started = std::time::Instant::now();
    let mut executions = 0;
    loop {
        let mut runner = TestRunner::new(config.clone());
        if let Err(failure) = runner.run(strategy, &test) {
            panic!("{name}: {failure}");
        }
        executions += u64::from(config.cases);
        if budget.is_none_or(|budget| started.elapsed() >= budget) {
            break;
        }
    }
    eprintln!("{name}: {executions} cases in {:.1?}", started.elapsed());
    executions
}

/// Whether this is a CI run, where a missing dependency must fail instead of skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A PostgreSQL database created for one test and dropped by [`TestPostgres::drop_database`].
#[derive(Debug)]
pub struct TestPostgres {
    admin_url: String,
    name: String,
    url: String,
}

impl TestPostgres {
    /// Creates a fresh, uniquely named database. Outside CI, returns `None` and says why when the
    /// server cannot be reached; in CI that is a panic, so a missing PostgreSQL fails the run.
    pub async fn create() -> Option<Self> {
        let admin_url = postgres_admin_url();
        let name = format!("snapkeeper_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(connection) => connection,
            Err(err) if !in_ci() => {
                eprintln!("skipping: PostgreSQL not reachable at SNAPKEEPER_TEST_POSTGRES_URL ({err})");
                return None;
            }
            Err(err) => panic!("PostgreSQL must be reachable in CI: {err}"),
        };
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        let _ = admin.close().await;
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Some(Self { admin_url, name, url })
    }

    /// The URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database (closing other sessions first).
    pub async fn drop_database(self) {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .unwrap_or_else(|e| panic!("reconnecting to drop {}: {e}", self.name));
        admin
            .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)))
            .await
            .unwrap_or_else(|e| panic!("dropping test database {}: {e}", self.name));
        let _ = admin.close().await;
    }
}

/// Captures the spans of the current thread in memory. Use with a current-thread runtime so
/// spawned server tasks report to the same subscriber.
pub struct SpanCapture {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

impl SpanCapture {
    /// Starts capturing, with W3C propagation installed.
    pub fn start() -> Self {
        crate::telemetry::install_propagator();
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let guard = tracing::subscriber::set_default(subscriber);
        Self { exporter, provider, _guard: guard }
    }

    /// The spans finished so far.
    pub fn finished(&self) -> Vec<SpanData> {
        let _ = self.provider.force_flush();
        self.exporter.get_finished_spans().unwrap_or_default()
    }
}
