"""Sign-in for people: OpenID Connect (authorization code with PKCE) against a configured provider, and the
embedded run's development provider. A signed-in person gets a short-lived exchange token carrying their
organisation, role and name, renewed silently from the provider's refresh token."""
