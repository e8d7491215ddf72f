"""A clinic's settings: milestone rules, alert escalation, crisis resources, measurement interval, webhook (DESIGN §6); audited."""
