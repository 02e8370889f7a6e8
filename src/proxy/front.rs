//! The outermost service: proxied requests are recognised and served here, ahead of the router.
//!
//! The router's per-route layers (routing, `from_fn` middlewares with their boxed services and
//! futures) are a good part of what a small proxied request costs (`cargo bench --bench proxy`).
//! So proxy-domain hosts, `/proxy/<port>/…` and
//! `/absproxy/<port>/…` are taken before routing, and this service does for them what those
//! layers do for every other route: it records activity and renders errors as JSON or the HTML
//! page. Everything else, and the login page and assets a proxy-domain host shows to someone not
//! yet logged in, goes to the router.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tower::Service;

use tower::ServiceExt;

use super::ProxyState;
use super::admission::{Parts, Refusal, Route, admit, route};
use crate::error::accepts_html;
use crate::metrics;
use crate::pages::as_page;
use crate::relative::{Query, found};
use crate::server::ConnInfo;

/// Wraps the application router; see the module docs. Cloned for every request (the router
/// holds services by value), so it is one reference count.
#[derive(Clone)]
pub struct Front(Arc<Inner>);

struct Inner {
    state: ProxyState,
    router: Router,
}

impl Front {
    pub fn new(state: ProxyState, router: Router) -> Front {
        Front(Arc::new(Inner { state, router }))
    }
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let local = req.extensions().get::<ConnInfo>().and_then(|c| c.local).map(|a| a.port());
        let head = Parts { method: req.method(), uri: req.uri(), headers: req.headers() };
        let started = std::time::Instant::now();
        match route(&self.0.state, &head, local) {
            Some(route) => Box::pin(timed(metrics::Route::Proxy, started, serve(self.0.clone(), req, route))),
            None => {
                let multi = matches!(self.0.state.auth.mode, crate::auth::Mode::Accounts(_));
                let class = metrics::Route::of_path(req.uri().path(), multi);
                Box::pin(timed(class, started, self.0.router.clone().call(req)))
            }
        }
    }
}

/// Counts a request in the metrics once its response head is ready.
async fn timed(
    class: metrics::Route,
    started: std::time::Instant,
    res: impl Future<Output = Result<Response, Infallible>>,
) -> Result<Response, Infallible> {
    let res = res.await?;
    metrics::request(class, res.status().as_u16(), started.elapsed());
    Ok(res)
}

async fn serve(front: Arc<Inner>, req: Request, route: Route) -> Result<Response, Infallible> {
    let state = &front.state;
    // As the router's activity layer does for every other request.
    state.activity.heart.record_activity();
    let info = req.extensions().get::<ConnInfo>();
    let (slot, conn) = (info.map(|c| c.slot.clone()), info.map_or(0, |c| c.id));
    // What the HTML error page needs, kept only for browsers (the request itself moves on).
    let page_for = accepts_html(req.headers()).then(|| req.uri().clone());
    let head = Parts { method: req.method(), uri: req.uri(), headers: req.headers() };
    let result = match admit(state, &head, route, conn).await {
        Ok(admitted) => super::forward(state, req, admitted).await,
        Err(Refusal::Error(e)) => Err(e),
        Err(Refusal::Login(to)) => Ok(found(&to)),
        Err(Refusal::Router) => Ok(front.router.clone().oneshot(req).await.unwrap_or_else(|never| match never {})),
    };
    Ok(match (result, page_for) {
        (Ok(res), _) => {
            // A proxied WebSocket keeps the server alive and is waited for at shutdown.
            crate::heart::routes::keep_upgraded(&state.activity, &res, slot, true);
            res
        }
        (Err(e), None) => e.into_response(),
        (Err(e), Some(uri)) => {
            let to = Query::parse(uri.query()).get("to").map(str::to_string);
            as_page(&state.pages, e.into_response(), uri.path(), to.as_deref())
        }
    })
}
