//! The IM service (`crates/im`) as a service of the server: namespace `/im`, with the
//! server's authentication (anonymous clients refused, `token_missing`), its store
//! flushed in the drain.

use std::sync::Arc;

use crate::service::{connect_refusal, BoxFuture, Context, Factory, Service};

/// The IM service of the server.
#[derive(Debug)]
pub struct ImService {
    im: im::Im,
    ctx: Context,
}

impl ImService {
    /// Makes the service, opening its store (see [`crate::default_services`]).
    pub fn factory() -> Factory {
        Box::new(|ctx: &Context| {
            let Some(config) = ctx.config.im.clone() else {
                return Ok(None);
            };
            let store_stats = ctx.shared.store_stats.clone();
            let im = im::Im::open(config, store_stats).map_err(|e| format!("im store: {e}"))?;
            Ok(Some(Arc::new(ImService {
                im,
                ctx: ctx.clone(),
            }) as Arc<dyn Service>))
        })
    }
}

impl Service for ImService {
    fn name(&self) -> &'static str {
        "im"
    }

    fn install(&self, builder: socketio::Builder) -> socketio::Builder {
        let ctx = self.ctx.clone();
        self.im.install(
            builder,
            Arc::new(move |req| {
                let identity = ctx.authenticate(req)?;
                identity.user.clone().ok_or_else(|| {
                    ctx.shared.stats.auth_refused("token_missing");
                    connect_refusal(
                        "token_missing",
                        "the IM service needs a token: connect with auth { token }",
                        None,
                    )
                })
            }),
        )
    }

    fn started(&self, io: &socketio::Server) {
        self.im.started(io);
    }

    fn flush(&self) -> BoxFuture {
        let im = self.im.clone();
        Box::pin(async move { im.flush().await })
    }
}
