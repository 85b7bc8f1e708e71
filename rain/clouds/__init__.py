"""The clouds Rain talks to, as both the builders (VMs to build in) and the targets (images to register) use them.

One client per cloud, so a login, a protocol quirk or an error mapping is
written once: `opennebula` (pyone, template syntax) and `openstack` (the
Keystone settings and logins, keystoneauth1 sessions, their exceptions as
Rain's), `tls` (the system's CAs, which both trust), and `leases` (the cloud
machines a running fg-image holds, so that a killed one's are released).
"""
