"""Stand-ins for services that cannot run here, speaking their real protocols on 127.0.0.1."""
