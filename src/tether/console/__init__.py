"""The web pages Tether serves: the sign-in and consent pages of the built-in OpenID provider
(and, later, the console). Server-rendered Jinja2 with autoescaping, no inline script."""
