//! `POST /v1/users/{user_id}/sleep` and `/wake`: an asleep user has no instance, but keeps its
//! workspace, secret and route (answering 503 "asleep"); a wake (or a PUT) claims an instance
//! again with the same workspace.

use super::openapi::{ErrorBody, InternalError, Unauthorized};
use super::users::{InstanceDocument, deleting, document, no_instance, parse_user};
use super::{ApiError, AppState};
use crate::model::{Event, UserId, UserState};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Puts a ready user to sleep: its container stops, the workspace is detached and kept, the
/// instance is retired, and the route answers 503 "asleep" until a wake.
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/sleep",
    tag = "users",
    operation_id = "sleep_user",
    params(("user_id" = crate::model::UserId, Path, description = "The platform user id.")),
    responses(
        (status = 202, description = "Accepted: the user is `sleeping`, then `asleep` (also when it already was).", body = InstanceDocument),
        (status = 400, description = "`invalid_user_id`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: the user has no instance.", body = ErrorBody),
        (status = 409, description = "`not_ready`: only a `ready` user can sleep (it is queued, provisioning, migrating or failed; retry once ready), or `user_deleting`.", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn sleep_user(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let user_id = parse_user(path)?;
    let now = (state.clock)();
    if state.store.request_sleep(&user_id, now).await? {
        let event = Event::SleepRequested {
            reason: "asked".into(),
        };
        state
            .store
            .record(now, &event, Some(&user_id), None)
            .await?;
        state.wake.notify_one();
    }
    let user = state
        .store
        .get_user(&user_id)
        .await?
        .ok_or_else(|| no_instance(&user_id))?;
    match user.state {
        UserState::Sleeping | UserState::Asleep => {
            Ok((StatusCode::ACCEPTED, Json(document(&state, &user).await?)).into_response())
        }
        UserState::Deleting => Err(deleting()),
        other => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!("the user is {other}; only a ready user can sleep"),
        )),
    }
}

/// Wakes an asleep user: it is queued for an instance, which gets the same workspace, secret
/// and route. A user that is awake already is left as it is.
#[utoipa::path(
    post,
    path = "/v1/users/{user_id}/wake",
    tag = "users",
    operation_id = "wake_user",
    params(("user_id" = crate::model::UserId, Path, description = "The platform user id.")),
    responses(
        (status = 200, description = "The user is awake and ready.", body = InstanceDocument),
        (status = 202, description = "Accepted: the user is queued or on its way to ready.", body = InstanceDocument),
        (status = 400, description = "`invalid_user_id`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: the user has no instance.", body = ErrorBody),
        (status = 409, description = "`falling_asleep`: the user is still going to sleep; retry in a few seconds. `user_deleting`.", body = ErrorBody),
        (status = 500, response = InternalError),
    ),
    security(("bearer" = [])),
)]
pub async fn wake(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let user_id = parse_user(path)?;
    let now = (state.clock)();
    let user = state
        .store
        .get_user(&user_id)
        .await?
        .ok_or_else(|| no_instance(&user_id))?;
    match user.state {
        UserState::Asleep => wake_user(&state, &user_id, now).await?,
        UserState::Failed => {
            if state.store.requeue_failed(&user_id, now).await? {
                state.wake.notify_one();
            }
        }
        UserState::Sleeping => return Err(falling_asleep()),
        UserState::Deleting => return Err(deleting()),
        UserState::Queued | UserState::Provisioning | UserState::Ready | UserState::Migrating => {}
    }
    let user = state
        .store
        .get_user(&user_id)
        .await?
        .ok_or_else(|| no_instance(&user_id))?;
    super::users::respond(&state, &user).await
}

/// The answer to a wake (or a PUT) while the user is still going to sleep.
pub(super) fn falling_asleep() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "falling_asleep",
        "the user is still going to sleep; wake it again in a few seconds",
    )
}

/// `asleep` → `queued`, journalled, and the reconciler woken.
pub(super) async fn wake_user(
    state: &AppState,
    user_id: &UserId,
    now: i64,
) -> Result<(), ApiError> {
    if state.store.wake(user_id, now).await? {
        state
            .store
            .record(now, &Event::WakeRequested, Some(user_id), None)
            .await?;
        state.wake.notify_one();
    }
    Ok(())
}
