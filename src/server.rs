//! Opening a Broker ([`App`]) and serving it over HTTP or HTTPS until a shutdown signal.
//!
//! Shutdown order: stop accepting connections and mark `/ready` 503, end every stream, let
//! in-flight requests (inserts waiting for their commit) finish, then close the store, which
//! finishes queued commits before it returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::ServiceExt;
use axum::extract::Request;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use tower::Layer;
use tower::util::BoxCloneSyncService;
use tower_http::normalize_path::NormalizePathLayer;

use crate::Error;
use crate::api;
use crate::auth::{Auth, file_modes, jwt, password};
use crate::config::Config;
use crate::conn::{AdmitAcceptor, Connections, Limits, listeners};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;
use crate::store::jetstream::store::JetStreamStore;
use crate::stream_conn::StreamAcceptor;
use crate::stream_runtime::StreamRuntime;
use crate::tls_conn::TlsAcceptor;

/// How often memory kept for password checks is looked at and, once unused, freed.
const MEMORY_RELEASE_PERIOD: Duration = Duration::from_secs(5);

/// An open Broker: store, hub and auth ready; serve it or mount its [`App::router`].
pub struct App {
    state: AppState,
    /// Most open connections when served (`--max-connections` within the open-file limit).
    max_connections: u64,
}

impl App {
    /// Opens the store in `config.db` and prepares everything a request needs.
    ///
    /// # Errors
    /// Invalid flag combinations, an unusable database directory or a locked database.
    pub async fn open(config: Config) -> Result<Self, Error> {
        config.validate().map_err(Error::Config)?;
        install_crypto_provider();
        let open_files = crate::limits::raise_open_files();
        let max_connections = crate::limits::connection_cap(config.max_connections, open_files);
        if let Some(configured) = config.max_connections
            && max_connections < configured
        {
            tracing::warn!(
                open_files,
                max_connections,
                "the open-file limit admits fewer connections than --max-connections \
                 (raise `ulimit -n` for more)"
            );
        }
        let max_streams =
            crate::limits::stream_cap(config.max_streams, open_files, max_connections);
        if max_streams < config.max_streams {
            tracing::warn!(
                open_files,
                max_streams,
                "the open-file limit or --max-connections admits fewer streams than \
                 --max-streams; streams beyond {max_streams} get 503 (raise `ulimit -n` for more)"
            );
        }
        let hub = Arc::new(Hub::new(
            usize::try_from(config.stream_buffer).unwrap_or(usize::MAX),
            usize::try_from(config.stream_buffer_bytes).unwrap_or(usize::MAX),
            max_streams,
        ));
        let (store, cluster, stored_secret): (Arc<dyn Store>, _, _) =
            if let Some(nats) = config.nats_options() {
                // Cluster mode: connecting checks the server's version first.
                let js = Arc::new(JetStreamStore::open(&nats).await?);
                let secret = match config.jwt_secret {
                    Some(_) => None,
                    None => Some(js.jwt_secret().await?),
                };
                (js.clone() as Arc<dyn Store>, Some(js), secret)
            } else {
                file_modes::create_private_dir(&config.db);
                let store = Arc::new(EmbeddedStore::open_with_cache(
                    &config.db,
                    usize::try_from(config.db_cache).unwrap_or(usize::MAX),
                )?);
                (store as Arc<dyn Store>, None, None)
            };
        // The hub consumes the store's ordered commit feed; attached before any write.
        store.feed(hub.clone()).await?;
        let secret = match (&config.jwt_secret, stored_secret) {
            (Some(secret), _) => {
                jwt::warn_if_short(secret);
                secret.as_bytes().to_vec()
            }
            (None, Some(secret)) => secret,
            (None, None) => jwt::load_or_create_secret(&config.db).map_err(|e| {
                Error::Config(format!(
                    "cannot keep the JWT secret in {}: {e}",
                    config.db.display()
                ))
            })?,
        };
        if cluster.is_none() {
            file_modes::restrict_db_dir(&config.db);
        }
        let auth = Arc::new(Auth::new(&config, &secret, store.clone()));
        if let Some(cluster) = &cluster {
            // Another node's revocation, password or permission change ends this node's
            // streams of that user, as a local change does.
            let (auth, hub) = (auth.clone(), hub.clone());
            cluster
                .watch_users(move |username| {
                    auth.forget(username);
                    hub.revoke(username);
                })
                .await?;
        }
        if let Some(admin) = &config.admin {
            auth.ensure_admin(admin).await?;
        }
        if config.open_by_default {
            tracing::warn!(
                "AUTHENTICATION IS OFF: broker_run serves in open mode, as the original Broker \
                 did, and anyone can read and write every channel; set BROKER_JWT_SECRET (or \
                 BROKER_NO_AUTH=false) to turn it on"
            );
        } else if config.no_auth {
            tracing::warn!(
                "authentication is off (--no-auth): anyone can read and write every channel"
            );
        }
        let mercure = crate::mercure::Mercure::new(&config.mercure).map_err(Error::Config)?;
        let mut state = AppState::new(
            Arc::new(config),
            store,
            hub.clone(),
            auth,
            Arc::new(Metrics::new()),
        );
        state.mercure = Arc::new(mercure);
        tokio::spawn(state.presence.clone().announce(hub, state.shutdown.clone()));
        if let Some(cluster) = &cluster {
            // Joins and leaves reach every node; another node's clients leave when it dies.
            crate::presence::cluster::share(
                state.presence.clone(),
                cluster.client(),
                cluster.prefix(),
                state.shutdown.clone(),
            )
            .await?;
            if state.mercure.active_subscriptions {
                // The subscriptions API of every node lists every node's subscriptions.
                crate::presence::cluster::share_list(
                    state.mercure.subscriptions.clone(),
                    cluster.client(),
                    format!("{}.mercure-subscriptions", cluster.prefix()),
                    state.shutdown.clone(),
                )
                .await?;
            }
        }
        Ok(Self {
            state,
            max_connections,
        })
    }

    /// The routes, to serve or to nest into another axum app.
    pub fn router(&self) -> Router {
        api::router(self.state.clone())
    }

    /// The shared state (store, hub, metrics, configuration).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Ends every stream and closes the store after its queued commits.
    pub async fn close(self) {
        self.state.begin_shutdown();
        self.state.store.close().await;
    }
}

/// Installs ring as the process's rustls crypto provider (once; later calls are no-ops).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `config` with rustls's traffic keys handed over on request, which the lean TLS 1.3 stream
/// path needs (`tls_conn::SealedTls`): a stream seals its records itself and keeps nothing
/// else of the connection.
fn with_key_handover(config: &RustlsConfig) -> RustlsConfig {
    let mut inner = (*config.get_inner()).clone();
    inner.enable_secret_extraction = true;
    RustlsConfig::from_config(Arc::new(inner))
}

/// Admission for the connections of `app`, under its configured limits.
fn connections(app: &App) -> Arc<Connections> {
    let config = &app.state.config;
    let limits = Limits {
        max_connections: usize::try_from(app.max_connections).unwrap_or(usize::MAX),
        max_per_ip: u32::try_from(config.max_connections_per_ip).unwrap_or(u32::MAX),
        header_timeout: config.header_timeout(),
        body_timeout: config.body_timeout(),
        idle_timeout: config.idle_timeout(),
        write_timeout: Duration::from_secs(config.write_timeout),
    };
    Connections::new(
        limits,
        config.trusted_proxies.clone(),
        app.state.metrics.clone(),
    )
}

/// HTTP settings of the general server. Admission times out request heads and idle
/// connections for both HTTP versions and over TLS, with one sweeper rather than a timer per
/// connection; hyper's own HTTP/1 header timeout is off, as it would also cut idle keep-alive
/// connections at the header timeout.
fn configure_http<A: axum_server::Address, Acc>(server: &mut axum_server::Server<A, Acc>) {
    server.http_builder().http1().header_read_timeout(None);
}

/// Runs `serve_one` on every listener, each accept loop a task of its own, until they all
/// end; the first error, if any. One loop failing shuts the others down through `handle`.
async fn serve_all<F, Fut>(
    listeners: Vec<tokio::net::TcpListener>,
    handle: &Handle<SocketAddr>,
    mut serve_one: F,
) -> std::io::Result<()>
where
    F: FnMut(tokio::net::TcpListener) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        loops.spawn(serve_one(listener));
    }
    let mut result = Ok(());
    while let Some(ended) = loops.join_next().await {
        let ended = ended.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if ended.is_err() && result.is_ok() {
            handle.shutdown();
            result = ended;
        }
    }
    result
}

/// Serves `config` until `shutdown` completes, then shuts down gracefully.
///
/// # Errors
/// When the server cannot start (configuration, store, TLS files, address in use).
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = SocketAddr::new(config.host, config.port);
    let reuse_port = config.reuse_port;
    let tls = match (config.tls_enabled(), &config.tls_cert, &config.tls_key) {
        (true, _, _) if config.acme_enabled() => {
            install_crypto_provider();
            crate::auth::file_modes::create_private_dir(&config.db);
            let server = crate::acme::start(&config).map_err(Error::Config)?;
            tracing::info!(
                domains = %config.acme_domain.join(","),
                directory = crate::acme::directory(&config),
                "certificates from ACME (TLS-ALPN-01)"
            );
            Some(RustlsConfig::from_config(Arc::new(server)))
        }
        (true, Some(cert), Some(key)) => {
            install_crypto_provider();
            Some(RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
                Error::Config(format!(
                    "cannot load TLS certificate {} / key {} (--tls-cert / --tls-key): {e}",
                    cert.display(),
                    key.display()
                ))
            })?)
        }
        _ => None,
    };
    let timeout = Duration::from_secs(config.shutdown_timeout);
    let write_timeout = Duration::from_secs(config.write_timeout);
    let app = App::open(config).await?;
    let listeners = match listeners::bind(addr, app.state().config.accept_queues, reuse_port) {
        Ok(listeners) => listeners,
        Err(e) => {
            app.close().await;
            return Err(Error::Listen(addr, e));
        }
    };
    let router = app.router();
    let handle = Handle::<SocketAddr>::new();

    let state = app.state().clone();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, ending streams");
        state.begin_shutdown();
        stopper.graceful_shutdown(Some(timeout));
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let announcer = handle.clone();
    tokio::spawn(async move {
        if let Some(bound) = announcer.listening().await {
            tracing::info!("listening on {scheme}://{bound}");
        }
    });

    let connections = connections(&app);
    connections.spawn_sweeper();
    tokio::spawn(password::release_unused_memory_every(
        MEMORY_RELEASE_PERIOD,
        app.state().shutdown.clone(),
    ));
    // node-sse-server (Express) accepts `/subscribe/` for `/subscribe`; so does Broker.
    let routes = NormalizePathLayer::trim_trailing_slash().layer(router);
    let stream_runtime = match StreamRuntime::start(app.state().config.stream_threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            app.close().await;
            return Err(Error::Config(format!(
                "cannot start the event-stream threads (--stream-threads): {e}"
            )));
        }
    };
    let streams = StreamAcceptor::new(BoxCloneSyncService::new(routes.clone()))
        .with_write_timeout(write_timeout)
        .on_runtime(stream_runtime.handle());
    let stream_tasks = streams.streams();
    let service = ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(routes);
    // The accept loop retries after an accept error (a full descriptor table, say) instead of
    // ending; admission keeps connections below the open-file limit so that it does not come
    // to that.
    let result = match tls {
        Some(tls) => {
            let tls = with_key_handover(&tls);
            let acceptor =
                AdmitAcceptor::under_tls(connections.clone(), TlsAcceptor::new(tls, streams));
            serve_all(listeners, &handle, |listener| {
                let mut server = axum_server::Server::<SocketAddr>::from_listener(listener)
                    .acceptor(acceptor.clone());
                configure_http(&mut server);
                server.handle(handle.clone()).serve(service.clone())
            })
            .await
        }
        None => {
            let acceptor = AdmitAcceptor::plain(connections.clone(), streams);
            serve_all(listeners, &handle, |listener| {
                let mut server = axum_server::Server::<SocketAddr>::from_listener(listener)
                    .acceptor(acceptor.clone());
                configure_http(&mut server);
                server.handle(handle.clone()).serve(service.clone())
            })
            .await
        }
    };
    // Streams served apart from the general server end at shutdown like the others.
    stream_tasks.close();
    if tokio::time::timeout(timeout, stream_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("event streams still open after the shutdown timeout");
    }
    drop(stream_runtime);
    app.close().await;
    result.map_err(|e| Error::Listen(addr, e))?;
    tracing::info!("stopped");
    Ok(())
}
