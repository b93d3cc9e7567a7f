"""The state store: every DynamoDB read and write leadwatch makes."""
