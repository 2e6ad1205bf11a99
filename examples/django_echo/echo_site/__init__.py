"""A minimal Django project whose WebSocket at ``/ws`` authenticates the logged-in user."""
