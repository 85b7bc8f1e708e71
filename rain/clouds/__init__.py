"""The clouds Rain talks to, as both the builders (VMs to build in) and the targets (images to register) use them.

One client per cloud, so a login, a protocol quirk or an error mapping is
written once: `opennebula` (XML-RPC client, template syntax) and `openstack`
(the Keystone settings, one keystoneauth1 session, its exceptions as Rain's).
"""
