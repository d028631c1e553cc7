# Name the host in the prompt: images of several systems often run side by side.
PS1='\u@\h:\w\$ '
