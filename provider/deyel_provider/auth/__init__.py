"""OAuth2 for Deyel: the token value, the token endpoint client, the token provider and the Bearer auth."""
