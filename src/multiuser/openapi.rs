//! The OpenAPI 3.1 description of `/api` (served at `/api/openapi.json`), generated from the
//! handlers' own `#[utoipa::path]` attributes and the request and response types they use, so
//! it cannot drift from what the routes take and give. CI runs a property-based API fuzzer
//! (schemathesis) against a real server with it (tests/openapi.rs).

use utoipa::OpenApi;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Object, ObjectBuilder, RefOr, Schema, Type};

use super::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "code-server",
        description = "Accounts, sessions, API tokens, workspaces and the audit log of a \
                       multi-user code-server. Send `Authorization: Bearer <token>` (a personal \
                       API token) or the session cookie; a request with the cookie that changes \
                       something must also come from this server's origin."
    ),
    paths(
        api::get_me,
        api::patch_me,
        api::get_my_sessions,
        api::delete_my_session,
        api::get_my_usage,
        api::get_my_tokens,
        api::post_my_token,
        api::delete_my_token,
        api::get_users,
        api::post_user,
        api::get_user,
        api::patch_user,
        api::delete_user,
        api::get_user_sessions,
        api::delete_user_sessions,
        api::get_audit,
        api::get_workspaces,
        api::post_workspace_stop,
        api::post_workspace_start,
    ),
    security(("token" = []), ("cookie" = [])),
    tags(
        (name = "account", description = "The signed-in user's own account"),
        (name = "users", description = "Accounts, for admins"),
        (name = "audit", description = "Security-relevant events, for admins"),
        (name = "workspaces", description = "Each user's VS Code server, for admins"),
    )
)]
struct ApiDoc;

/// The errors any route may answer, with `{"error": "..."}` (crate::error::AppError). Every
/// operation lists them all: which one a request meets depends on the caller and the moment
/// (a store outage, the rate limiter), not only on the route.
const ERRORS: &[(&str, &str)] = &[
    ("400", "Invalid input; the message names the field"),
    ("401", "No valid session or API token"),
    ("403", "Not an admin, or a cookie request from another origin"),
    ("404", "No such thing, or another user's"),
    ("408", "The request body stopped arriving"),
    ("409", "The username or email is taken"),
    ("413", "The body is too large"),
    ("415", "The body is not JSON"),
    ("429", "Too many requests (see Retry-After)"),
    ("503", "A store is unreachable (see Retry-After)"),
];

fn error_response(description: &str) -> Response {
    let schema = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("error", Object::with_type(Type::String))
        .required("error")
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Schema::Object(schema))).build())
        .build()
}

/// The description as JSON; `cookie` is this server's session cookie name (it follows
/// `--cookie-suffix`).
pub fn document(cookie: &str) -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = crate::version::VERSION.to_string();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(
            HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("A personal API token")).build(),
        ),
    );
    components.add_security_scheme("cookie", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(cookie))));
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete].into_iter().flatten() {
            for (status, description) in ERRORS {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::T(error_response(description)));
            }
        }
    }
    doc.to_json().expect("the OpenAPI description serializes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_api_route_is_described_with_its_errors() {
        let doc: serde_json::Value = serde_json::from_str(&super::document("code-server-session")).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/api/users/me", &["get", "patch"][..]),
            ("/api/users/me/sessions/{id}", &["delete"]),
            ("/api/users/me/tokens", &["get", "post"]),
            ("/api/users", &["get", "post"]),
            ("/api/users/{id}", &["get", "patch", "delete"]),
            ("/api/users/{id}/sessions", &["get", "delete"]),
            ("/api/audit", &["get"]),
            ("/api/workspaces", &["get"]),
            ("/api/users/{id}/workspace/stop", &["post"]),
        ] {
            for m in methods {
                let op = &paths[path][m];
                assert!(op.is_object(), "{m} {path} is described");
                assert!(op["responses"]["401"].is_object(), "{m} {path} lists the errors");
            }
        }
        assert_eq!(doc["components"]["securitySchemes"]["cookie"]["name"], "code-server-session");
        let user = &doc["components"]["schemas"]["UserView"]["properties"];
        assert!(user["username"].is_object() && user.get("password_hash").is_none());
        assert_eq!(doc["components"]["schemas"]["NewUserBody"]["additionalProperties"], false);
    }
}
