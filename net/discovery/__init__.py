"""Finding peers: ``net.peers()`` (candidates probed with ``info``, cached), and the LAN's own sockets:
the ARP table, the parallel port check, the multicast query and its responder.
"""
