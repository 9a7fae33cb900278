//! A group's members changing: who may change what, and who owns a group whose owner
//! leaves. Runs on the writer, inside the batch's transaction, so the rights checked are
//! those in force when the change is made.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::{Conversation, ConversationId, Kind, Member, Role};
use crate::sqlite::{fetch_conversation, insert_member};
use crate::{StoreError, StoreStats};

/// A change of a group's members. The rights of `by`:
///
/// - the owner (or the backend, `by: None`) adds and removes anyone but the owner, and
///   makes members admins (`promote`) and admins members (`demote`);
/// - an admin adds members and removes members (not admins; themselves, yes);
/// - a member changes nothing but leaves.
///
/// Users added who are members already, users removed who are not and roles that are
/// already so change nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChange {
    /// Who changes it: a member, or `None` for the backend.
    pub by: Option<String>,
    /// Users to add, as members.
    pub add: Vec<String>,
    /// Users to remove.
    pub remove: Vec<String>,
    /// Members to make admins.
    pub promote: Vec<String>,
    /// Admins to make members.
    pub demote: Vec<String>,
    /// `by` leaves the group (the lists are then ignored). An owner who leaves hands the
    /// group to its longest-standing admin, or else its longest-standing member.
    pub leave: bool,
    /// The most members the group may have after the change.
    pub max_members: u64,
}

/// A change of a group's members, as made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersChanged {
    /// The conversation after the change.
    pub conversation: Conversation,
    /// The members added (not those who were members already), with their watermarks at
    /// the conversation's last message: they start with nothing unread.
    pub added: Vec<Member>,
    /// The users removed (or who left).
    pub removed: Vec<String>,
    /// Members whose role changed, with their new role (a new owner included).
    pub roles: Vec<(String, Role)>,
}

/// What a change needs to know of the group: the conversation, the roles of `by` and of
/// every user the change names (members only), and who would inherit it from its owner.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) conversation: Conversation,
    pub(crate) roles: HashMap<String, Role>,
    /// The longest-standing admin, or else member, other than `by` (read only when the
    /// owner leaves).
    pub(crate) heir: Option<String>,
}

/// The writes a change makes, and what it reports.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) delete: Vec<String>,
    /// Members inserted, with their watermarks.
    pub(crate) insert: Vec<Member>,
    pub(crate) set_roles: Vec<(String, Role)>,
    /// The conversation's new owner column, when it changes.
    pub(crate) owner: Option<Option<String>>,
}

impl Plan {
    /// Rows the plan writes (the conversation's row included).
    pub(crate) fn writes(&self) -> u64 {
        (self.delete.len() + self.insert.len() + self.set_roles.len()) as u64 + 1
    }

    /// The change as reported, once made (`after` is the conversation then).
    pub(crate) fn into_changed(self, after: Conversation) -> MembersChanged {
        MembersChanged {
            conversation: after,
            added: self.insert,
            removed: self.delete,
            roles: self.set_roles,
        }
    }
}

/// The users whose roles a change must know (`by` first).
pub(crate) fn named(change: &MemberChange) -> Vec<String> {
    let mut users: Vec<String> = change.by.iter().cloned().collect();
    if !change.leave {
        for list in [&change.add, &change.remove, &change.promote, &change.demote] {
            users.extend(list.iter().cloned());
        }
    }
    users
}

/// Decides what `change` writes, from what is known of the group: the rights of `by`,
/// the bounds, the handover (see [`MemberChange`]). Backend-free: each store reads
/// [`Known`] and applies the [`Plan`] in its own SQL.
pub(crate) fn plan(change: &MemberChange, known: &Known) -> Result<Plan, StoreError> {
    let conv = &known.conversation;
    let role = |user: &str| known.roles.get(user).copied();
    // A non-member learns nothing of the conversation, not even its kind.
    let by_role = match &change.by {
        Some(user) => Some(role(user).ok_or(StoreError::NotFound)?),
        None => None,
    };
    if conv.kind == Kind::Direct {
        return Err(StoreError::Conflict(
            "a direct conversation's members do not change".to_owned(),
        ));
    }
    let mut plan = Plan {
        delete: Vec::new(),
        insert: Vec::new(),
        set_roles: Vec::new(),
        owner: None,
    };
    if change.leave {
        let (Some(user), Some(role)) = (&change.by, by_role) else {
            return Err(StoreError::Conflict("only a member leaves".to_owned()));
        };
        plan.delete.push(user.clone());
        if role == Role::Owner {
            if let Some(heir) = &known.heir {
                plan.set_roles.push((heir.clone(), Role::Owner));
            }
            plan.owner = Some(known.heir.clone());
        }
        return Ok(plan);
    }
    let owner = by_role.is_none() || by_role == Some(Role::Owner);
    let lists = [&change.add, &change.remove, &change.promote, &change.demote];
    if by_role == Some(Role::Member) && lists.iter().any(|l| !l.is_empty()) {
        return Err(StoreError::Forbidden(
            "only the group's owner and admins change its members".to_owned(),
        ));
    }
    let roles_change = !change.promote.is_empty() || !change.demote.is_empty();
    if !owner && roles_change {
        return Err(StoreError::Forbidden(
            "only the owner makes and unmakes admins".to_owned(),
        ));
    }
    for user in &change.remove {
        match role(user) {
            None => continue,
            Some(Role::Owner) => {
                return Err(StoreError::Conflict(
                    "the owner is not removed; conversation.leave hands the group over".to_owned(),
                ))
            }
            Some(Role::Admin) if !owner && Some(user) != change.by.as_ref() => {
                return Err(StoreError::Forbidden(
                    "an admin removes members, not other admins".to_owned(),
                ))
            }
            Some(_) => plan.delete.push(user.clone()),
        }
    }
    for user in &change.add {
        if role(user).is_none() && !plan.insert.iter().any(|m| &m.user == user) {
            plan.insert.push(Member {
                user: user.clone(),
                role: Role::Member,
                read_seq: conv.last_seq,
                delivered_seq: conv.last_seq,
                joined_seq: conv.last_seq,
            });
        }
    }
    let count = conv.member_count + plan.insert.len() as u64 - plan.delete.len() as u64;
    if count > change.max_members {
        return Err(StoreError::Limit(format!(
            "a group has at most {} members",
            change.max_members
        )));
    }
    for (users, from, to) in [
        (&change.promote, Role::Member, Role::Admin),
        (&change.demote, Role::Admin, Role::Member),
    ] {
        for user in users {
            match role(user) {
                None => return Err(StoreError::Conflict(format!("{user:?} is not a member"))),
                Some(Role::Owner) => {
                    return Err(StoreError::Conflict(
                        "the owner's role does not change".to_owned(),
                    ))
                }
                Some(r) if r == from => plan.set_roles.push((user.clone(), to)),
                Some(_) => {}
            }
        }
    }
    Ok(plan)
}

/// The writer's part of [`crate::SqliteStore::change_members`].
pub(crate) fn change(
    conn: &Connection,
    id: ConversationId,
    change: MemberChange,
    stats: &StoreStats,
) -> Result<MembersChanged, StoreError> {
    let conversation = fetch_conversation(conn, id)?;
    let mut roles = HashMap::new();
    for user in named(&change) {
        if let Some(role) = role_of(conn, id, &user)? {
            roles.insert(user, role);
        }
    }
    let by_owner = change
        .by
        .as_ref()
        .is_some_and(|by| roles.get(by) == Some(&Role::Owner));
    let heir = if change.leave && by_owner {
        conn.query_row(
            "SELECT user FROM members WHERE conversation_id = ?1 AND user != ?2 \
             ORDER BY role = 'admin' DESC, joined_seq, user LIMIT 1",
            params![id, change.by],
            |r| r.get(0),
        )
        .optional()?
    } else {
        None
    };
    let plan = plan(
        &change,
        &Known {
            conversation,
            roles,
            heir,
        },
    )?;
    for user in &plan.delete {
        conn.prepare_cached("DELETE FROM members WHERE conversation_id = ?1 AND user = ?2")?
            .execute(params![id, user])?;
    }
    for m in &plan.insert {
        insert_member(conn, id, &m.user, m.role, m.joined_seq)?;
    }
    for (user, role) in &plan.set_roles {
        conn.prepare_cached(
            "UPDATE members SET role = ?3 WHERE conversation_id = ?1 AND user = ?2",
        )?
        .execute(params![id, user, role.as_str()])?;
    }
    if let Some(owner) = &plan.owner {
        conn.execute(
            "UPDATE conversations SET owner = ?2 WHERE id = ?1",
            params![id, owner],
        )?;
    }
    let delta = plan.insert.len() as i64 - plan.delete.len() as i64;
    conn.execute(
        "UPDATE conversations SET member_count = member_count + ?2 WHERE id = ?1",
        params![id, delta],
    )?;
    stats.wrote(plan.writes());
    stats.read(1);
    Ok(plan.into_changed(fetch_conversation(conn, id)?))
}

/// `user`'s role in conversation `id`, if a member.
fn role_of(conn: &Connection, id: ConversationId, user: &str) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = conn
        .prepare_cached("SELECT role FROM members WHERE conversation_id = ?1 AND user = ?2")?
        .query_row(params![id, user], |r| r.get(0))
        .optional()?;
    Ok(role.as_deref().and_then(Role::parse))
}
