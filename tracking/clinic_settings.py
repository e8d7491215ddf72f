"""A clinic's settings: milestone rules, alert escalation, crisis resources, measurement interval and
the webhook (DESIGN §6); every change audited with before and after."""
