//! A group's members changing: who may change what, and who owns a group whose owner
//! leaves. Runs on the writer, inside the batch's transaction, so the rights checked are
//! those in force when the change is made.

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

/// The writer's part of [`crate::SqliteStore::change_members`].
pub(crate) fn change(
    conn: &Connection,
    id: ConversationId,
    change: MemberChange,
    stats: &StoreStats,
) -> Result<MembersChanged, StoreError> {
    let before = fetch_conversation(conn, id)?;
    // A non-member learns nothing of the conversation, not even its kind.
    let by_role = match &change.by {
        Some(user) => Some(role_of(conn, id, user)?.ok_or(StoreError::NotFound)?),
        None => None,
    };
    if before.kind == Kind::Direct {
        return Err(StoreError::Conflict(
            "a direct conversation's members do not change".to_owned(),
        ));
    }
    let mut changed = MembersChanged {
        conversation: before.clone(),
        added: Vec::new(),
        removed: Vec::new(),
        roles: Vec::new(),
    };
    let mut writes = 1u64;
    if change.leave {
        let (Some(user), Some(role)) = (change.by, by_role) else {
            return Err(StoreError::Conflict("only a member leaves".to_owned()));
        };
        delete_member(conn, id, &user)?;
        writes += 1;
        if role == Role::Owner {
            let heir: Option<String> = conn
                .query_row(
                    "SELECT user FROM members WHERE conversation_id = ?1 \
                     ORDER BY role = 'admin' DESC, joined_seq, user LIMIT 1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(heir) = &heir {
                set_role(conn, id, heir, Role::Owner)?;
                changed.roles.push((heir.clone(), Role::Owner));
                writes += 1;
            }
            conn.execute(
                "UPDATE conversations SET owner = ?2 WHERE id = ?1",
                params![id, heir],
            )?;
        }
        changed.removed.push(user);
    } else {
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
            match role_of(conn, id, user)? {
                None => continue,
                Some(Role::Owner) => {
                    return Err(StoreError::Conflict(
                        "the owner is not removed; conversation.leave hands the group over"
                            .to_owned(),
                    ))
                }
                Some(Role::Admin) if !owner && Some(user) != change.by.as_ref() => {
                    return Err(StoreError::Forbidden(
                        "an admin removes members, not other admins".to_owned(),
                    ))
                }
                Some(_) => {}
            }
            delete_member(conn, id, user)?;
            changed.removed.push(user.clone());
        }
        for user in &change.add {
            if insert_member(conn, id, user, Role::Member, before.last_seq)? > 0 {
                changed.added.push(Member {
                    user: user.clone(),
                    role: Role::Member,
                    read_seq: before.last_seq,
                    delivered_seq: before.last_seq,
                    joined_seq: before.last_seq,
                });
            }
        }
        let count = before.member_count + changed.added.len() as u64 - changed.removed.len() as u64;
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
                match role_of(conn, id, user)? {
                    None => return Err(StoreError::Conflict(format!("{user:?} is not a member"))),
                    Some(Role::Owner) => {
                        return Err(StoreError::Conflict(
                            "the owner's role does not change".to_owned(),
                        ))
                    }
                    Some(role) if role == from => {
                        set_role(conn, id, user, to)?;
                        changed.roles.push((user.clone(), to));
                    }
                    Some(_) => {}
                }
            }
        }
        writes += (changed.added.len() + changed.removed.len() + changed.roles.len()) as u64;
    }
    let delta = changed.added.len() as i64 - changed.removed.len() as i64;
    conn.execute(
        "UPDATE conversations SET member_count = member_count + ?2 WHERE id = ?1",
        params![id, delta],
    )?;
    stats.wrote(writes);
    stats.read(1);
    changed.conversation = fetch_conversation(conn, id)?;
    Ok(changed)
}

/// `user`'s role in conversation `id`, if a member.
fn role_of(conn: &Connection, id: ConversationId, user: &str) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = conn
        .prepare_cached("SELECT role FROM members WHERE conversation_id = ?1 AND user = ?2")?
        .query_row(params![id, user], |r| r.get(0))
        .optional()?;
    Ok(role.as_deref().and_then(Role::parse))
}

fn delete_member(conn: &Connection, id: ConversationId, user: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM members WHERE conversation_id = ?1 AND user = ?2")?
        .execute(params![id, user])?;
    Ok(())
}

fn set_role(
    conn: &Connection,
    id: ConversationId,
    user: &str,
    role: Role,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE members SET role = ?3 WHERE conversation_id = ?1 AND user = ?2")?
        .execute(params![id, user, role.as_str()])?;
    Ok(())
}
