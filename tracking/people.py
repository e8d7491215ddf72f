"""People of a clinic: invitations, roles, deactivation (DESIGN §6); every change audited with before and after."""
